"""Register stage: the champion/challenger gate, against a real MLflow sqlite store (tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from pipeline_config.schema import RegisterConfig
from tasks.common import tracking
from tasks.registration.gate import beats
from tasks.registration.registry import register_model


@pytest.mark.parametrize(
    "candidate, champion, metric, margin, expected",
    [
        (0.5, None, "rougeL", 0.0, True),  # no champion yet
        (0.5, 0.4, "rougeL", 0.0, True),
        (0.4, 0.4, "rougeL", 0.0, False),  # a tie does not promote
        (0.45, 0.4, "rougeL", 0.1, False),  # not by enough
        (9.0, 10.0, "perplexity", 0.0, True),  # lower is better
        (11.0, 10.0, "perplexity", 0.0, False),
    ],
)
def test_gate(candidate, champion, metric, margin, expected):
    assert beats(candidate, champion, metric, margin) is expected


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:  # noqa: F811
    """A trained-model folder layout (`<root>/model/`) holding a copy of the shared tiny model; a copy,
    so that nothing registering it does can touch the session-wide original."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(tiny_model_dir, root / "model")
    return root


def register(model_dir: Path, tmp_path: Path, rouge_l: float, name: str) -> dict:
    run_id = tracking.start_run({"x": 1}, "test", {})
    metrics = {"rougeL": rouge_l, "perplexity": 3.0}
    out = tmp_path / f"reg-{rouge_l}"
    out.mkdir()
    base = {"model_dir": str(model_dir / "model"), "card": {"name": "tiny", "license": "apache-2.0"}}
    result = register_model(
        model_dir / "model", metrics, out, run_id, base, False, RegisterConfig(model_name=name)
    )
    assert json.loads((out / "registration.json").read_text())["version"] == result["version"]
    return result


def test_champion_moves_only_when_beaten(model_dir, tmp_path):
    name = "gate-test"
    first = register(model_dir, tmp_path, 0.30, name)
    assert (first["version"], first["aliases"], first["promoted"]) == ("1", ["challenger", "champion"], True)
    worse = register(model_dir, tmp_path, 0.20, name)
    assert (worse["version"], worse["aliases"], worse["promoted"]) == ("2", ["challenger"], False)
    assert worse["previous_champion"] == "1" and worse["previous_champion_value"] == pytest.approx(0.30)
    better = register(model_dir, tmp_path, 0.40, name)
    assert better["aliases"] == ["challenger", "champion"]
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert client.get_model_version(name, "1").aliases == []  # champion and challenger both moved on
    assert client.get_model_version(name, "3").tags["metric.rougeL"] == "0.4"


def test_registered_model_loads_on_its_own(model_dir, tmp_path):
    result = register(model_dir, tmp_path, 0.1, "load-test")
    pipe = mlflow.transformers.load_model("models:/load-test@champion")
    out = pipe("def add", max_new_tokens=3, do_sample=False)
    assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"].startswith("def add")
    assert result["model_uri"].startswith("models:/")
    version = mlflow.MlflowClient().get_model_version("load-test", result["version"])
    assert "name: tiny, license: apache-2.0" in version.description  # the base model's card
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/load-test/{result['version']}"))
    import importlib.metadata

    assert f"transformers=={importlib.metadata.version('transformers')}" in requirements.read_text().split()
