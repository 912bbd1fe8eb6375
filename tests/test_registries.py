"""Each extension point has one registry, and the registry, the schema and the README's table agree: the row
filters of the clean stage, the kinds of model source and the pass@k benchmarks. (Templates and teacher
backends have the same test beside their own: tests/tasks/test_templates.py, test_teacher_dialects.py.)"""

from __future__ import annotations

import pytest

from pipeline_config import load_config
from pipeline_config.metrics import PASS_K_SUITES, SUITES
from pipeline_config.schema import (
    SOURCE_KINDS,
    CleanConfig,
    DecontaminateConfig,
    EvaluateConfig,
    ModelConfig,
    PassAtKConfig,
    PipelineConfig,
    evaluated_metrics,
)
from tasks.base_model.sources import SOURCE_KINDS as SOURCE_REGISTRY
from tasks.clean.filters import ROW_FILTERS
from tasks.common.benchmarks import BENCHMARKS
from tests.conftest import docs_text


def readme_table(header: str) -> list[str]:
    """The first column's names of the table (README or docs/) whose header row starts with `header`."""
    readme = docs_text()
    assert f"\n{header} |" in readme, f"README.md and docs/ have no table headed {header!r}"
    rows = readme.split(f"\n{header} |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [row.split("`")[1] for row in rows]


# --- row filters


def test_row_filters_registry_schema_and_readme_agree():
    assert readme_table("| `clean` row filter") == list(ROW_FILTERS)  # in the order rows meet them
    for entry in ROW_FILTERS.values():
        assert entry.keys, f"row filter {entry.name!r} names no clean.* key that sets it"
        unknown = set(entry.keys) - set(CleanConfig.model_fields)
        assert not unknown, f"row filter {entry.name!r} reads {unknown}, which are not clean.* keys"


def test_a_filters_keys_are_the_ones_that_change_it():
    # the declared keys are honest: changing one from its default changes (or removes) that filter only
    changed = {
        "self_instruct_filters": False, "min_instruction_chars": 100, "max_instruction_chars": 5,
        "min_output_chars": 100, "max_output_chars": 5, "max_tokens": 5, "require_parse": False,
        "code": {"enabled": False},
    }  # fmt: skip
    row = {"instruction": "Write a function.", "input": "", "output": "def f():\n    return 1"}
    for entry in ROW_FILTERS.values():
        for key in entry.keys:
            default, other = (
                CleanConfig(max_tokens=100),
                CleanConfig(**{"max_tokens": 100, key: changed[key]}),
            )
            before, after = entry.build(default, len), entry.build(other, len)
            assert after is None or after(row) != before(row), f"clean.{key} does not change {entry.name!r}"


# --- model sources


def test_model_source_registry_schema_and_readme_agree():
    assert tuple(SOURCE_REGISTRY) == SOURCE_KINDS == ("gguf", "hub", "folder", "scratch")
    assert readme_table("| `model.source.kind`") == list(SOURCE_KINDS)
    for kind, entry in SOURCE_REGISTRY.items():
        assert callable(entry.identity) and callable(entry.materialize), kind


def test_the_loader_names_the_schemas_source_kinds(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("name: t\nmodel:\n  source: {kind: nosuch}\n")
    with pytest.raises(Exception, match="must be one of gguf, hub, folder, scratch"):
        load_config(path)
    assert ModelConfig(source={"kind": "hub", "id": "gpt2"}).source.kind == "hub"


# --- benchmarks


def test_benchmark_registry_schema_and_readme_agree():
    sections = [name for name, f in EvaluateConfig.model_fields.items() if f.annotation is PassAtKConfig]
    assert sections == list(BENCHMARKS) == list(PASS_K_SUITES)  # one evaluate.<name> section each
    assert readme_table("| pass@k benchmark") == list(BENCHMARKS)
    switches = {name for name, f in DecontaminateConfig.model_fields.items() if f.annotation is bool}
    fixed = {name for name, info in BENCHMARKS.items() if info.fixed_items}
    assert fixed <= switches, "a benchmark of fixed problems has a clean.decontaminate.<name> switch"


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_an_enabled_benchmark_is_a_metric_suite_the_gate_accepts(name):
    assert name in SUITES
    evaluate = {name: {"enabled": True, "samples": 2, "k": [1, 2]}}
    register = {"guards": [{"metric": f"{name}.pass_at_2", "margin": 0.1}]}
    cfg = PipelineConfig(
        name="t", model={"source": {"kind": "scratch"}}, evaluate=evaluate, register=register
    )
    assert evaluated_metrics(cfg.evaluate)[name] == {"pass_at_1": "higher", "pass_at_2": "higher"}
    with pytest.raises(ValueError, match=f"unknown suite '{name}'"):
        PipelineConfig(name="t", model={"source": {"kind": "scratch"}}, register=register)


# --- dataset formats


def test_dataset_formats_registry_schema_and_readme_agree():
    from pipeline_config.schema import DatasetSource
    from tasks.common.record_formats import FORMATS

    assert readme_table("| `datasets[].format`") == list(FORMATS)
    for name, fmt in FORMATS.items():  # every format is accepted, with each of its fields renamable
        source = DatasetSource(
            name="d", files=["x.jsonl"], format=name, columns=dict.fromkeys(fmt.columns, "c")
        )
        assert set(source.column_names()) == set(fmt.columns)
    with pytest.raises(ValueError, match="not a dataset format"):
        DatasetSource(name="d", files=["x.jsonl"], format="openai")
