"""Register stage: versions, aliases and the gate's decision against a real MLflow sqlite store
(tests/conftest.py); the decision rule alone is tests/tasks/test_gate.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from flows import tracking
from pipeline_config.schema import RegisterConfig
from tasks.common.templates import ALPACA
from tasks.registration.registry import Candidate, register_model
from tests.conftest import REPO

IDS = [f"ex{i}" for i in range(30)]
WIGGLE = [((i * 7) % 11 - 5) / 100 for i in range(30)]  # deterministic per-example noise, mean ~0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A trained-model folder layout (`<root>/model/`) holding a copy of the shared tiny model and its
    prompt template; a copy, so that nothing registering it does can touch the session-wide original."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(tiny_model_dir, root / "model")
    ALPACA.save(root / "model")
    return root


GENERATION = {"max_new_tokens": 4, "stop": list(ALPACA.stop), "temperature": 0.0}


def candidate(
    model_dir: Path, predictions: Path, level: float, eval_set: str, version_key: str, generation=GENERATION
) -> Candidate:
    lineage = {
        "stage_keys": {"scrape": "k-scrape", "train": "k-train"},
        "benchmark_keys": {"humaneval": "k-he"},
        "git_commit": "abc123",
        "config_hash": "cfg-hash",
    }
    return Candidate(
        model_dir=model_dir / "model",
        base={"model_dir": str(model_dir / "model"), "card": {"name": "tiny", "license": "apache-2.0"}},
        suites={"heldout": predictions},
        metrics={"heldout.rougeL": level, "heldout.bits_per_byte": 1.0},
        eval_set_key=eval_set,
        generation=generation,
        lineage=lineage,
        config={"name": "test", "train": {"method": "full"}},
        card="---\nlicense: apache-2.0\n---\n# card of the test model\n",
        version_key=version_key,
        training={"steps": 12, "rows_in": 30, "train_loss": 1.5},
    )


def register(
    model_dir: Path,
    tmp_path: Path,
    level: float,
    name: str,
    eval_set: str = "set-a",
    version_key: str = "",
    metric: str = "heldout.rougeL",
    generation: dict = GENERATION,
) -> dict:
    """Register the tiny model as a run whose evaluation scored `level` (+ noise) on every example of
    `eval_set` (rougeL; bits per byte 2 - level, lower being better), its base 0.05 (bits 3.0), the echo
    baseline 0.04; the evaluate stage's predictions are logged to the run as the runner does."""
    run_id = tracking.start_run({"x": 1}, "test", {})
    out = tmp_path / f"reg-{level}-{eval_set}-{run_id[:6]}"
    out.mkdir()
    predictions = out / "predictions.jsonl"
    rows = [
        {"id": i, "prompt": "def add(a, b):", "reference": "    return a + b", "input": "def add(a, b):"}
        | {
            "scores": {
                "finetuned": {"rougeL": level + w, "bits_per_byte": 2 - level + w},
                "base": {"rougeL": 0.05, "bits_per_byte": 3.0},
                "echo_input": {"rougeL": 0.04},
            }
        }
        for i, w in zip(IDS, WIGGLE, strict=True)
    ]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mlflow.MlflowClient().log_artifact(run_id, str(predictions), artifact_path="stages/evaluate")
    c = candidate(model_dir, predictions, level, eval_set, version_key or run_id, generation)
    cfg = RegisterConfig(model_name=name, primary_metric=metric, must_beat=["base", "echo_input"])
    if metric.endswith("bits_per_byte"):
        cfg = RegisterConfig(model_name=name, primary_metric=metric)
    result = register_model(c, out, run_id, cfg, tmp_path / "cache")
    assert json.loads((out / "registration.json").read_text())["version"] == result["version"]
    assert (out / "README.md").read_text() == c.card
    assert result["gate"]["reason"] in (out / "report.md").read_text()  # the decision, for Prefect's UI
    return result


def champion_comparison(result: dict) -> dict:
    return next(c for c in result["gate"]["comparisons"] if c["role"] == "champion")


def test_champion_moves_only_on_paired_evidence(model_dir, tmp_path):
    name = "gate-test"
    first = register(model_dir, tmp_path, 0.30, name)
    assert (first["version"], first["aliases"], first["promoted"]) == ("1", ["challenger", "champion"], True)
    worse = register(model_dir, tmp_path, 0.20, name)
    assert (worse["version"], worse["aliases"], worse["promoted"]) == ("2", ["challenger"], False)
    assert worse["gate"]["champion_version"] == "1"
    assert champion_comparison(worse)["difference"] == pytest.approx(-0.10, abs=1e-9)
    tie = register(model_dir, tmp_path, 0.30, name)
    assert not tie["promoted"] and "does not beat champion v1" in tie["gate"]["reason"]  # noise: no promotion
    better = register(model_dir, tmp_path, 0.40, name)
    assert better["aliases"] == ["challenger", "champion"] and champion_comparison(better)["n"] == 30
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "4"
    assert client.get_model_version(name, "1").aliases == []  # champion and challenger both moved on
    version = client.get_model_version(name, "4")
    tags = version.tags
    assert tags["metric.heldout.rougeL"] == "0.4" and tags["eval_set_key"] == "set-a"
    assert tags["gate.promoted"] == "True" and "beats the champion v1" in tags["gate.reason"]
    # the version's page: the verdict and reason first, how it was trained, its paired scores
    lines = version.description.splitlines()
    assert lines[0] == f"**Promoted**: {tags['gate.reason']}." and "beats the champion v1" in lines[0]
    assert lines[2] == (
        "A full fine-tune of tiny (licence apache-2.0), 12 steps on 30 training rows, profile `test`; "
        "evaluated on set `set-a`."
    )
    assert any(
        line.startswith("- heldout.rougeL vs champion v1 (champion, higher is better): ") for line in lines
    )
    refused = client.get_model_version(name, "2")
    assert refused.description.startswith(f"**Not promoted**: {refused.tags['gate.reason']}.")
    assert "does not beat champion v1" in refused.description


def test_without_a_champion_generate_says_why_and_what_loads(model_dir, tmp_path):
    """`finetune generate` asks for the champion by default: the error gives the challenger's gate reason."""
    from tasks.registration.registry import why_no_champion

    client = mlflow.MlflowClient()
    assert why_no_champion(client, "never-registered") == ""
    lost = register(model_dir, tmp_path, 0.03, "no-champion-test")  # below its base (0.05)
    assert not lost["promoted"]
    hint = why_no_champion(client, "no-champion-test")
    assert (
        "v1, the challenger, was not promoted (does not beat its base model: heldout.rougeL vs base" in hint
    )
    assert hint.endswith("--model challenger loads it")


def test_champion_from_another_eval_set_is_scored_again_on_this_one(model_dir, tmp_path):
    name = "rescore-test"
    register(model_dir, tmp_path, 0.30, name, eval_set="old-set")
    new = register(model_dir, tmp_path, 0.50, name, eval_set="new-set")
    # the champion (the tiny random model) was generated and scored on the new set's prompts: it scores ~0
    cached = tmp_path / "cache" / f"{name}-v1-new-set-rougeL-fp32.json"
    assert cached.is_file() and len(json.loads(cached.read_text())) == 30
    assert champion_comparison(new)["n"] == 30 and champion_comparison(new)["difference"] > 0.3
    assert new["promoted"]


def test_champion_rescored_by_likelihood_on_a_new_set(model_dir, tmp_path):
    """bits per byte of the references under the registered champion, computed again on the new set's
    rows: the untrained tiny model is near uniform over 512 tokens, far more bits than 2 - level."""
    name = "rescore-likelihood"
    metric = "heldout.bits_per_byte"
    register(model_dir, tmp_path, 0.30, name, eval_set="old-set", metric=metric)
    new = register(model_dir, tmp_path, 0.50, name, eval_set="new-set", metric=metric)
    rescored = json.loads((tmp_path / "cache" / f"{name}-v1-new-set-bits_per_byte-fp32.json").read_text())
    assert len(rescored) == 30 and min(rescored.values()) > 2.0
    assert new["promoted"] and champion_comparison(new)["difference"] < -0.5


def test_champion_generations_pair_only_within_one_precision(model_dir, tmp_path, monkeypatch):
    """A champion whose evaluation generated in fp32, against a challenger generating in bf16 on the same
    set: its generated scores are not paired with ours but generated again in bf16 (cached by precision);
    likelihoods, fp32's everywhere, are read from its run as they are."""
    from tasks.common import models

    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    bf16 = {**GENERATION, "precision": "bf16"}
    name = "precision-test"
    register(model_dir, tmp_path, 0.30, name)  # GENERATION: recorded before precision was, so fp32
    new = register(model_dir, tmp_path, 0.50, name, generation=bf16)
    assert (tmp_path / "cache" / f"{name}-v1-set-a-rougeL-bf16.json").is_file()
    assert champion_comparison(new)["difference"] > 0.3  # the tiny champion's own bf16 greedy output: ~0
    client = mlflow.MlflowClient()
    assert client.get_model_version(name, new["version"]).tags["eval_generation_precision"] == "bf16"

    metric = "heldout.bits_per_byte"
    likelihood = "precision-likelihood-test"
    register(model_dir, tmp_path, 0.30, likelihood, metric=metric)
    again = register(model_dir, tmp_path, 0.50, likelihood, metric=metric, generation=bf16)
    assert not list((tmp_path / "cache").glob(f"{likelihood}-*"))  # read from the champion's run
    assert champion_comparison(again)["difference"] == pytest.approx(-0.20, abs=1e-9)


def test_registered_model_loads_on_its_own(model_dir, tmp_path):
    result = register(model_dir, tmp_path, 0.1, "load-test")
    pipe = mlflow.transformers.load_model("models:/load-test@champion")
    out = pipe("def add", max_new_tokens=3, do_sample=False)
    assert isinstance(out[0]["generated_text"], str) and out[0]["generated_text"].startswith("def add")
    assert result["model_uri"].startswith("models:/")
    version = mlflow.MlflowClient().get_model_version("load-test", result["version"])
    assert "of tiny (licence apache-2.0)" in version.description  # the base model's card
    requirements = Path(mlflow.pyfunc.get_model_dependencies(f"models:/load-test/{result['version']}"))
    import importlib.metadata

    assert f"transformers=={importlib.metadata.version('transformers')}" in requirements.read_text().split()


def test_registration_is_idempotent_per_version_key(model_dir, tmp_path, monkeypatch):
    """A retry, or a re-run after a crash between creating the version and moving the aliases, finishes
    the job on the version it created instead of adding a second one."""
    from mlflow import MlflowClient

    name = "idempotent-test"
    calls = {"n": 0}
    real = MlflowClient.set_registered_model_alias

    def crash_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed between registering and aliasing")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", crash_once)
    with pytest.raises(RuntimeError, match="killed between"):
        register(model_dir, tmp_path, 0.30, name, version_key="key-1")
    monkeypatch.undo()
    again = register(model_dir, tmp_path, 0.30, name, version_key="key-1")
    assert (
        again["version"] == "1" and again["reused_version"] and again["aliases"] == ["challenger", "champion"]
    )
    assert register(model_dir, tmp_path, 0.30, name, version_key="key-1")["version"] == "1"
    assert [str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name = '{name}'")] == ["1"]
    assert register(model_dir, tmp_path, 0.30, name, version_key="key-2")["version"] == "2"  # another key


def test_the_version_key_names_the_model_not_the_way_to_the_store(monkeypatch):
    from types import SimpleNamespace

    from pipeline_config import load_config
    from tasks import registration
    from tasks.common.stage import StageContext

    cfg = load_config(REPO / "pipeline_config" / "tiny.yaml")
    inputs = {name: SimpleNamespace(key=f"k-{name}") for name in ("base_model", "train", "evaluate")}
    keys, versions = set(), set()
    for uri in ("sqlite:////data/mlflow.db", "http://127.0.0.1:5000"):  # one store, two ways to reach it
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        keys.add(registration.SPEC.key(cfg, {n: i.key for n, i in inputs.items()}))
        versions.add(registration.version_key(cfg, inputs, StageContext(mlflow_run_id="run-1")))
    assert len(keys) == 2 and len(versions) == 1  # the stage re-runs; it finds the version it registered
    other = {**inputs, "train": SimpleNamespace(key="k-train-2")}  # another model: another version
    assert registration.version_key(cfg, other, StageContext(mlflow_run_id="run-1")) not in versions
    forced = registration.version_key(cfg, inputs, StageContext(mlflow_run_id="run-1", forced=True))
    assert forced not in versions and forced.endswith("-forced-run-1")


@pytest.mark.slow
def test_one_model_is_one_version_through_either_uri_of_one_store(
    model_dir, tmp_path, monkeypatch, tracking_server
):
    # a local run registers through the sqlite file, the nightly deployment through the tracking server
    # serving that same file: the second finds the first's version
    url, store = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("FINETUNE_MLFLOW_ARTIFACTS", (store / "artifacts").as_uri())
    first = register(model_dir, tmp_path, 0.30, "two-uris", version_key="same-model")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    again = register(model_dir, tmp_path, 0.30, "two-uris", version_key="same-model")
    assert (first["version"], again["version"], again["reused_version"]) == ("1", "1", True)
    found = mlflow.MlflowClient(tracking_uri=url).search_model_versions("name = 'two-uris'")
    assert [str(v.version) for v in found] == ["1"]


def test_version_carries_template_generation_lineage_and_serving_params(model_dir, tmp_path):
    result = register(model_dir, tmp_path, 0.30, "lineage-test")
    uri = f"models:/lineage-test/{result['version']}"
    tags = mlflow.MlflowClient().get_model_version("lineage-test", result["version"]).tags
    assert (tags["stage.scrape.key"], tags["benchmark.humaneval.key"], tags["git_commit"]) == (
        "k-scrape",
        "k-he",
        "abc123",
    )
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["template"] == ALPACA.to_dict() | {"stop": list(ALPACA.stop)}
    assert info.metadata["generation"] == GENERATION and info.metadata["config"]["name"] == "test"
    # `mlflow models serve` formats a request with the training template and takes generation params
    assert info.metadata["prompt_template"] == ALPACA.without_input.replace("{instruction}", "{prompt}")
    params = {p.name: p.default for p in info.signature.params}
    assert params == {"max_new_tokens": GENERATION["max_new_tokens"], "do_sample": False}


def test_served_model_honours_generation_params(model_dir, tmp_path):
    """pyfunc (what `mlflow models serve` runs) applies the stored template and the request's params. The
    template here is the bare instruction, so the tiny random model's continuation of "return" shows: it
    repeats "turn", one token per new token."""
    from tasks.common.templates import PromptTemplate

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    PromptTemplate("bare", "{instruction}{input}", "{instruction}").save(bare / "model")
    result = register(bare, tmp_path, 0.30, "serve-test")
    served = mlflow.pyfunc.load_model(f"models:/serve-test/{result['version']}")
    assert served.predict(["return"], params={"max_new_tokens": 2}) == ["turnturn"]
    assert served.predict(["return"], params={"max_new_tokens": 5}) == ["turn" * 5]
    assert served.predict(["return"]) == ["turn" * GENERATION["max_new_tokens"]]  # the evaluation's default


def test_an_unreachable_registry_is_a_clear_retryable_error(model_dir, tmp_path, monkeypatch):
    """Nothing is lost: the evaluation's files stay, and once the registry is back the same call
    registers from them."""
    import socket

    from flows.stage_tasks import is_transient
    from tasks.registration.registry import RegistryUnavailable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    run_id = tracking.start_run({"x": 1}, "test", {})  # the pipeline's run began while it was up
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(
        json.dumps(
            {"id": "a", "prompt": "p", "reference": "r"}
            | {
                "scores": {
                    "finetuned": {"rougeL": 0.5},
                    "base": {"rougeL": 0.1},
                    "echo_input": {"rougeL": 0.1},
                }
            }
        )
        + "\n"
    )
    before = predictions.read_text()
    c = candidate(model_dir, predictions, 0.5, "set-x", "unreachable-key")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(RegistryUnavailable, match=f"the MLflow registry at {dead} is unreachable") as error:
        register_model(c, tmp_path, run_id, RegisterConfig(model_name="down-test"), tmp_path / "cache")
    assert is_transient(error.value)  # Prefect retries the register stage
    assert "--only register" in str(error.value) and predictions.read_text() == before
    monkeypatch.undo()
    assert (
        register_model(c, tmp_path, run_id, RegisterConfig(model_name="down-test"), tmp_path / "cache")[
            "version"
        ]
        == "1"
    )


@pytest.mark.parametrize("name", ["alpaca", "codegen_task", "question_answer"])
def test_the_serving_template_has_one_prompt_field_and_formats_as_generate_does(name):
    from tasks.common.templates import get_template
    from tasks.registration.registry import serving_template

    template = get_template(name)
    served = serving_template(template)
    assert served.count("{prompt}") == 1
    assert served.format(prompt="Sort a list {of} words.") == template.format("Sort a list {of} words.")
