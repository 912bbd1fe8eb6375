"""Fixtures of the task tests; the builders they use are plain functions in builders.py (and
scrape_builders.py, lm_references.py, tests/fake_site.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import _CACHE, build_tiny_model, tokenized_dataset
from scrape_builders import PKG, write_fake_package

from tests.fake_site import Site, sites


@pytest.fixture(scope="module", autouse=True)
def torch_one_thread():
    """Run a module's tiny-model work on one torch thread, then restore the setting.

    These models are so small that a second intra-op thread buys nothing, and when the machine is busy
    (another training run on the same 2 cores) spinning OpenMP threads made a 30-step run 60x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny llama + tokenizer; one build per session."""
    if "model" not in _CACHE:
        _CACHE["model"] = build_tiny_model(tmp_path_factory.mktemp("tiny_model"))
    return _CACHE["model"]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer as saved (right padding): what the tokenize tests encode with."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path):
    """(model, tokenizer) of tiny_model_dir: fp32, eval mode, the tokenizer padding and truncating on the left
    as load_tokenizer(for_generation=True) sets it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    return model, tokenizer


@pytest.fixture(scope="session")
def smollm2_stage(tmp_path_factory: pytest.TempPathFactory):
    """The offline profile's base_model stage (SmolLM2-135M-Instruct dequantized from its GGUF file, ~25 s),
    built once per session in a workspace of its own: (the config that built it, the stage output)."""
    from pipeline_config import load_config
    from tasks import base_model

    cfg = load_config(Path(__file__).resolve().parents[2] / "pipeline_config" / "offline.yaml")
    workspace = tmp_path_factory.mktemp("smollm2") / "ws"
    cfg = cfg.model_copy(update={"workspace": str(workspace)})
    return cfg, base_model.SPEC.build(cfg, {})


@pytest.fixture(scope="module")
def training_data(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The training tests' tokenized folder: 40 repetitive pairs (four functions); the rows of the held-out
    sources minus 4 test rows train."""
    from pipeline_config.schema import SplitConfig, TokenizeConfig

    split = SplitConfig(test_fraction=0.25, max_test_rows=4)
    out, report = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 40, TokenizeConfig(max_length=256), 0, split
    )
    assert (report["test_rows"], report["truncated"]) == (4, 0)
    assert report["train_rows"] == 40 - report["split"]["held_out_rows"] > 20
    return out


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The scrape tests' fake package (scrape_builders.py) in tmp_path/site, on sys.path: its root."""
    root = write_fake_package(tmp_path / "site" / PKG)
    monkeypatch.syspath_prepend(str(root.parent))
    return root


@pytest.fixture
def serve() -> Iterator[Callable[[dict], Site]]:
    """serve(routes) -> a started loopback Site (tests/fake_site.py); all are shut down after the test."""
    with sites() as start:
        yield start
