"""What the pipeline run's MLflow page shows (flows/run_page.py through flows/tracking.py `log_stage`), read
back from the session's real sqlite store: the gate's decision as tags and in the description with the
scores table, the comparison chart, the datasets the model saw, and the chart sections' metric names."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows import run_page, tracking
from tasks.evaluation.paired import comparisons
from tasks.registration.gate import decide

IDS = [f"ex{i}" for i in range(30)]
WIGGLE = [((i * 7) % 11 - 5) / 100 for i in range(30)]  # deterministic per-item noise, mean ~0
PNG = b"\x89PNG\r\n\x1a\n"


def per_item(level: float) -> list[float]:
    return [level + w for w in WIGGLE]


def evaluation(bits_finetuned: float) -> dict:
    """An evaluate report as the stage writes it, from per-item scores: bits per byte (fine-tuned
    `bits_finetuned`, base 3.0), ROUGE-L (fine-tuned 0.3, base 0.1, the echo baseline 0.2)."""
    heldout = comparisons(
        {
            "finetuned": {"bits_per_byte": per_item(bits_finetuned), "rougeL": per_item(0.3)},
            "base": {"bits_per_byte": per_item(3.0), "rougeL": per_item(0.1)},
            "echo_input": {"rougeL": per_item(0.2)},
        },
        {"bits_per_byte": "lower", "rougeL": "higher"},
    )
    means = {
        system: {
            f"heldout.{metric}": entry["systems"][system]["mean"]
            for metric, entry in heldout.items()
            if system in entry["systems"]
        }
        for system in ("finetuned", "base", "echo_input")
    }
    return {
        "eval_set_key": "set-a",
        "rows_in": 30,
        "rows_out": 30,
        "suites": {"heldout": {"items": 30, "generated": 30, "metrics": heldout}},
        "means": means,
        "seconds": 1.5,
    }


def registration(bits_finetuned: float, champion: float | None = None) -> dict:
    """The register report of a challenger gated on heldout.bits_per_byte (the real gate)."""
    evidence = {
        "heldout.bits_per_byte": {
            "finetuned": dict(zip(IDS, per_item(bits_finetuned), strict=True)),
            "base": dict(zip(IDS, per_item(3.0), strict=True)),
        }
    }
    theirs = dict(zip(IDS, per_item(champion), strict=True)) if champion is not None else None
    version = "1" if champion is not None else None
    decision = decide(evidence, "heldout.bits_per_byte", ["base"], champion=theirs, champion_version=version)
    aliases = ["challenger", "champion"] if decision.promote else ["challenger"]
    return {
        "rows_in": 1,
        "rows_out": 1,
        "model_name": "page-model",
        "version": "2",
        "model_uri": "models:/page-model/2",
        "aliases": aliases,
        "promoted": decision.promote,
        "gate": decision.record(),
    }


def stage_folder(tmp_path: Path, stage: str, report: dict, manifest: dict | None = None) -> Path:
    folder = tmp_path / stage
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def log(run_id: str, tmp_path: Path, stage: str, report: dict, manifest: dict | None = None) -> None:
    folder = stage_folder(tmp_path, stage, report, manifest)
    tracking.log_stage(run_id, stage, f"key-{stage}", "executed", report, folder)


def chart_bytes(run_id: str, tmp_path: Path, name: str) -> bytes:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="stages/evaluate/comparison.png", dst_path=str(tmp_path / name)
    )
    return Path(local).read_bytes()


@pytest.fixture
def run_id():
    run = tracking.start_run({"x": 1}, "run-page", {})
    yield run
    tracking.end_run(run)


def test_a_refused_challenger_says_why_on_the_run(run_id, tmp_path):
    """Better than its base, no better than the champion: not promoted, and the run page says so."""
    evaluated = evaluation(2.0)
    log(run_id, tmp_path, "evaluate", evaluated)
    before = chart_bytes(run_id, tmp_path, "before")
    note = tracking.client().get_run(run_id).data.tags[run_page.NOTE]
    assert note.startswith("## Evaluated, not registered in this run")  # the register stage has not run
    registered = registration(2.0, champion=2.0)
    log(run_id, tmp_path, "register", registered)

    run = tracking.client().get_run(run_id)
    tags, reason = run.data.tags, registered["gate"]["reason"]
    assert tags["decision.promoted"] == "false" and tags["decision.reason"] == reason
    assert "does not beat champion v1" in reason
    assert tags["decision.metric"] == "heldout.bits_per_byte"
    assert tags["decision.model_version"] == "page-model v2" and tags["decision.aliases"] == "challenger"
    # against the base: 1.0 bits per byte fewer, a zero-width interval (the same noise), passed
    assert tags["decision.vs_base"].startswith("-1.0000 [-1.0000, -1.0000], n 30, lower is better")
    assert tags["decision.vs_base"].endswith(": passed")
    assert tags["decision.vs_champion"].startswith("champion v1: +0.0000 [+0.0000, +0.0000], n 30")
    assert tags["decision.vs_champion"].endswith(": failed")

    note = tags[run_page.NOTE]
    lines = note.splitlines()
    assert lines[0] == "## Not promoted: page-model v2 is the challenger (the champion stays v1)"
    assert f"**Why:** {reason}." in lines
    gate_header = "| role | against | metric | n | challenger - other | paired 95% CI | gain bound | result |"
    assert gate_header in lines and any(line.startswith("| champion | champion v1 |") for line in lines)
    header = next(line for line in lines if line.startswith("| system |"))
    assert header == (
        "| system | heldout.bits_per_byte (lower is better, n 30) | heldout.rougeL (higher is better, n 30) |"
    )
    systems = evaluated["suites"]["heldout"]["metrics"]["bits_per_byte"]["systems"]
    cells = {s: f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for s, v in systems.items()}
    assert cells["finetuned"].startswith("2.00") and cells["base"].startswith("3.00")
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| ") and " [" in line}
    assert rows["| fine-tuned"].startswith(f"| fine-tuned | {cells['finetuned']} | 0.30")  # mean [interval]
    assert rows["| base"].startswith(f"| base | {cells['base']} | 0.10")
    assert rows["| echo_input (baseline)"].startswith("| echo_input (baseline) |  | 0.20")  # no bits

    after = chart_bytes(run_id, tmp_path, "after")
    assert before.startswith(PNG) and after.startswith(PNG)
    assert after != before  # redrawn with the gate's panel


def test_a_promoted_first_version_says_so(run_id, tmp_path):
    log(run_id, tmp_path, "evaluate", evaluation(2.0))
    log(run_id, tmp_path, "register", registration(2.0))
    tags = tracking.client().get_run(run_id).data.tags
    assert tags["decision.promoted"] == "true" and tags["decision.vs_champion"] == "no champion yet"
    assert tags["decision.reason"].startswith("no champion yet; it beats its base model")
    heading = "## Promoted: page-model v2 is the champion\n\n**Why:** no champion yet"
    assert tags[run_page.NOTE].startswith(heading)
    c = tracking.client()
    promoted = c.search_runs(
        [c.get_run(run_id).info.experiment_id], filter_string="tags.\"decision.promoted\" = 'true'"
    )
    assert run_id in [r.info.run_id for r in promoted]  # as the README says to search them


def test_the_data_the_model_saw_are_dataset_inputs(run_id, tmp_path):
    clean = {"rows_in": 103, "rows_out": 84, "dropped": {"duplicate": 19}, "seconds": 0.1}
    tokenize = {"eval_set_key": "evalset16hex0000", "rows_in": 84, "rows_out": 75}
    tokenize |= {"train_rows": 67, "test_rows": 8, "train_tokens": 8576}
    clean_outputs = {"pairs": "pairs.jsonl", "rejected": "rejected.jsonl"}
    log(run_id, tmp_path, "clean", clean, {"outputs": clean_outputs})
    log(run_id, tmp_path, "tokenize", tokenize, {"outputs": {"dataset_dir": "dataset"}})
    found = {
        i.dataset.name: (i.dataset, {t.key: t.value for t in i.tags})
        for i in tracking.client().get_run(run_id).inputs.dataset_inputs
    }
    assert set(found) == {"clean/pairs", "tokenize/train", "tokenize/test"}
    pairs, pairs_tags = found["clean/pairs"]
    assert pairs.digest == "key-clean" and json.loads(pairs.profile) == {"num_rows": 84}
    assert json.loads(pairs.source)["uri"] == str(tmp_path / "clean" / "pairs.jsonl")
    train, train_tags = found["tokenize/train"]
    assert train.digest == "key-tokenize" and json.loads(train.profile) == {"num_rows": 67, "tokens": 8576}
    assert train_tags["mlflow.data.context"] == "training"
    test, test_tags = found["tokenize/test"]
    assert test.digest == "evalset16hex0000" and json.loads(test.profile)["num_rows"] == 8
    assert json.loads(test.source)["uri"] == str(tmp_path / "tokenize" / "dataset" / "test")
    assert test_tags["mlflow.data.context"] == "evaluation" and pairs_tags["mlflow.data.context"] == "cleaned"


def test_headline_numbers_come_first_and_stage_sections_stay_small(run_id, tmp_path):
    train = {"rows_in": 67, "steps": 6, "train_loss": 6.2, "merge": {"tolerance": 0.001}, "method": "lora"}
    folder = stage_folder(tmp_path, "train", train)
    history = [{"step": 2, "loss": 6.3}, {"step": 2, "eval_loss": 6.4}, {"step": 4, "loss": 6.1}]
    (folder / "log_history.json").write_text(json.dumps(history))
    tracking.log_stage(run_id, "train", "key-train", "executed", train, folder)
    log(run_id, tmp_path, "evaluate", evaluation(2.0))
    metrics = tracking.client().get_run(run_id).data.metrics
    # the UI's chart section is the name before the last "/", sorted, un-prefixed names last
    sections = {name.rpartition("/")[0] for name in metrics}
    assert sections == {"headline", "stages/train", "stages/evaluate"}
    assert sorted(sections)[0] == "headline"
    assert metrics["headline/heldout.bits_per_byte"] == pytest.approx(2.0, abs=0.01)
    assert metrics["headline/heldout.bits_per_byte_base"] == pytest.approx(3.0, abs=0.01)
    assert metrics["headline/train_loss"] == 6.2 and metrics["stages/train/steps"] == 6
    assert metrics["stages/evaluate/means.echo_input.heldout.rougeL"] == pytest.approx(0.2, abs=0.01)
    curve = tracking.client().get_metric_history(run_id, "headline/loss")
    assert [(m.step, m.value) for m in curve] == [(2, 6.3), (4, 6.1)]
    assert [m.value for m in tracking.client().get_metric_history(run_id, "headline/eval_loss")] == [6.4]
    # per-system intervals, powers and settings stay in report.json: not one chart each
    assert not [n for n in metrics if "suites" in n or "merge" in n]
    assert len([n for n in metrics if n.startswith("stages/evaluate/")]) == 8  # 5 means, rows, seconds


def test_a_dataset_another_run_created_meanwhile_is_linked_on_retry():
    from mlflow.exceptions import MlflowException

    calls = []

    class Client:
        def log_inputs(self, run_id, datasets):
            calls.append(run_id)
            if len(calls) == 1:  # the other run inserted the same (experiment, name, digest) first
                raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.digest")

    run_page.log_inputs(Client(), "r1", ["d"])
    assert calls == ["r1", "r1"]

    class Broken:
        def log_inputs(self, run_id, datasets):
            raise MlflowException("no such run")

    with pytest.raises(MlflowException, match="no such run"):
        run_page.log_inputs(Broken(), "r1", ["d"])
