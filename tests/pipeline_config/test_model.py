"""`model.source`: a discriminated union on `kind`, and the windows of the models built here."""

from __future__ import annotations

import pytest

from pipeline_config import FolderSource, GGUFSource, HubSource, ScratchSource, load_config
from tests.pipeline_config.helpers import raises_config_error, with_source, write


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "{kind: gguf, package: my_models.weights, file: tiny/model-q8_0.gguf}",
            GGUFSource(kind="gguf", package="my_models.weights", file="tiny/model-q8_0.gguf"),
        ),
        ("{kind: hub, id: EleutherAI/pythia-70m}", HubSource(kind="hub", id="EleutherAI/pythia-70m")),
        ("{kind: hub, id: gpt2, revision: v1.0}", HubSource(kind="hub", id="gpt2", revision="v1.0")),
        ("{kind: folder, path: ../models/base}", FolderSource(kind="folder", path="../models/base")),
        ("{kind: scratch, num_layers: 3}", ScratchSource(kind="scratch", num_layers=3)),
    ],
)
def test_model_source_kinds(tmp_path, source, expected):
    cfg = load_config(write(tmp_path, with_source(source)))
    assert cfg.model.source == expected and type(cfg.model.source) is type(expected)
    assert HubSource(kind="hub", id="x").revision == "main"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            with_source("{id: gpt2}"),
            "model.source, line 3: needs a `kind`: one of gguf, hub, folder, scratch",
        ),
        (
            with_source("\n    kind: hubb\n    id: gpt2"),
            "model.source.kind, line 4: must be one of gguf, hub, folder, scratch (got 'hubb')",
        ),
        (with_source("gpt2"), "model.source, line 3: must be a mapping with a `kind`"),
        (with_source("{kind: hub, id: gpt2, path: x}"), "model.source.path, line 3: unknown key"),
        (with_source("{kind: hub, id: /home/me/model}"), "model.source.id, line 3: must be a hub id"),
        (with_source("{kind: folder}"), "model.source.path, line 3: required key is missing"),
        (
            with_source("{kind: gguf, package: pkg, file: /opt/models/x.gguf}"),
            "model.source.file, line 3: must be a relative path inside the package",
        ),
        (with_source("{kind: gguf, package: pkg, file: ../x.gguf}"), "model.source.file, line 3"),
        (with_source("{kind: gguf, package: pkg, file: x.bin}"), "must name a .gguf file (got 'x.bin')"),
        (with_source("{kind: gguf, package: my-pkg, file: x.gguf}"), "model.source.package, line 3"),
        (
            with_source("\n    kind: scratch\n    vocab_size: lots"),
            "model.source.vocab_size, line 5: Input should be a valid integer",
        ),
        (
            with_source("{kind: scratch, hidden_size: 30, num_heads: 4}"),
            "hidden_size (30) must be divisible by num_heads (4)",
        ),
        (
            "name: t\nmodel:\n  name_or_path: gpt2\n",
            "model.name_or_path, line 3: unknown key (now model.source: {kind: hub",
        ),
        ("name: t\nmodel:\n  scratch: {}\n", "model.scratch, line 3: unknown key (now model.source"),
    ],
)
def test_model_source_errors(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_max_length_bound_applies_to_scratch_only(tmp_path):
    long = "tokenize:\n  max_length: 4096\n"
    hub = load_config(write(tmp_path, with_source("{kind: hub, id: gpt2}", long)))
    assert hub.tokenize.max_length == 4096
    message = raises_config_error(write(tmp_path, with_source("{kind: scratch}", long)))
    assert "tokenize.max_length (4096) exceeds model.source.max_position_embeddings (512)" in message
