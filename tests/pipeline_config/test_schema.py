"""The schema package itself: it resolves no paths, importing it changes no process-wide state, names are
checked against registries by one helper, and the tiny-model dimensions are written once."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from pipeline_config.schema import MiniatureSection, ScratchSource, TrainConfig, one_of
from tests.pipeline_config.helpers import REPO


def test_schema_resolves_no_paths():
    """Workspace resolution lives in tasks/common/io.py; the schema holds only the raw `workspace` string."""
    import pipeline_config.schema as schema

    assert not hasattr(schema, "REPO_ROOT")
    assert not hasattr(schema.PipelineConfig, "workspace_path")


def test_importing_the_schema_leaves_the_warning_filters_as_they_were():
    # its dependencies first, so that what changes is the schema's doing only; every warning is recorded, so
    # the one pydantic gives for the `register` field must be silenced where the class is made
    code = """
import sys, warnings, pydantic, yaml, tasks.common.templates, tasks.common.teacher, tasks.common.sandbox
assert "pipeline_config" not in sys.modules
before = list(warnings.filters)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    inside = list(warnings.filters)
    import pipeline_config.schema
    assert list(warnings.filters) == inside, "the schema changed the warning filters while importing"
assert list(warnings.filters) == before
assert not caught, [str(w.message) for w in caught]
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "value, expected",
    [
        ("cosin", "not a thing; did you mean 'cosine'? x.key must be 'linear', 'cosine' or 'constant'"),
        ("zzz", "not a thing; x.key must be 'linear', 'cosine' or 'constant'"),
        ("const", "did you mean 'constant'?"),  # a prefix of a name
    ],
)
def test_one_of_suggests_close_names_and_names_the_key(value, expected):
    assert one_of("cosine", ("linear", "cosine", "constant"), "x.key", "a thing") == "cosine"
    with pytest.raises(ValueError) as err:
        one_of(value, ("linear", "cosine", "constant"), "x.key", "a thing")
    assert expected in str(err.value)


def test_one_of_lists_a_long_registry_only_when_nothing_is_close():
    names = [f"name_{i}" for i in range(20)]
    with pytest.raises(ValueError) as err:
        one_of("name_", names, "x.key", "a thing")
    assert str(err.value) == "not a thing; did you mean 'name_0', 'name_1', 'name_2'? (x.key)"
    with pytest.raises(ValueError, match="x.key must be 'name_0', 'name_1', "):
        one_of("zzz", names, "x.key", "a thing")


def test_the_tiny_model_dimensions_are_shared_with_their_own_defaults_and_bounds():
    dims = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
            "max_position_embeddings", "tokenizer_max_docs")  # fmt: skip
    scratch, mini = ScratchSource(kind="scratch"), MiniatureSection()
    assert [getattr(scratch, d) for d in dims] == [2048, 128, 2, 4, 256, 512, 3000]
    assert [getattr(mini, d) for d in dims] == [1024, 64, 2, 4, 128, 2048, 500]
    # written once: both inherit every dimension from the same definition
    (shared,) = {
        cls for cls in ScratchSource.__mro__ if "vocab_size" in cls.__dict__.get("__annotations__", {})
    }
    assert set(shared.__annotations__) == set(dims)
    assert not set(dims) & (set(ScratchSource.__annotations__) | set(MiniatureSection.__annotations__))
    for cls, args in ((MiniatureSection, {}), (ScratchSource, {"kind": "scratch"})):
        with pytest.raises(ValidationError, match="greater than or equal to 300"):
            cls(**args, vocab_size=299)
        with pytest.raises(ValidationError, match="greater than 0"):
            cls(**args, num_heads=0)


def test_train_names_are_checked_by_the_helper():
    with pytest.raises(ValidationError, match="did you mean 'cosine'"):
        TrainConfig(lr_scheduler="cosin")
