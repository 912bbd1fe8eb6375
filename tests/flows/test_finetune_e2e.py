"""The whole flow on the tiny profile under one Prefect test server: cold run, warm re-run, --force train."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.cli import main
from flows.finetune import STAGES, finetune
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    raw = yaml.safe_load((REPO / "pipeline_config" / "tiny.yaml").read_text())
    raw["workspace"] = str(tmp_path_factory.mktemp("workspace"))
    raw["register"]["model_name"] = "e2e-model"
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def version_key(config_path: Path, stages: dict) -> str:
    """The version key the register stage of this finished run gave its model."""
    from types import SimpleNamespace

    from pipeline_config import load_config
    from tasks import registration
    from tasks.common.stage import StageContext

    inputs = {name: SimpleNamespace(key=stages[name]["key"]) for name in ("base_model", "train", "evaluate")}
    return registration.version_key(load_config(config_path), inputs, StageContext())


@pytest.fixture(scope="module")
def cold(prefect_server, tiny_config) -> dict:
    return finetune(config_path=str(tiny_config))


def test_cold_run_executes_every_stage_and_registers(cold, tiny_config):
    assert list(cold["stages"]) == list(STAGES)
    assert {s["status"] for s in cold["stages"].values()} == {"executed"}
    stages = cold["stages"]
    assert stages["scrape"]["rows_in"] == 12  # tiny.yaml: scrape.max_files
    assert stages["synthesize"]["rows_in"] == stages["scrape"]["rows_out"]
    assert stages["clean"]["rows_in"] == stages["synthesize"]["rows_out"] >= stages["clean"]["rows_out"] > 10
    for name, s in stages.items():
        assert (Path(s["path"]) / "manifest.json").is_file(), name
        assert Path(s["path"]).parent.name == name
    record = cold["mlflow"]
    assert record["model_name"] == "e2e-model" and record["version"] == "1"
    # no champion before: the first version wins exactly when the paired interval of its bits per byte
    # against its base model's (register.primary_metric's default, all held-out rows) is below 0
    scores = json.loads((Path(stages["evaluate"]["path"]) / "report.json").read_text())
    vs_base = scores["suites"]["heldout"]["metrics"]["bits_per_byte"]["vs"]["base"]
    wins = vs_base["improvement_low"] > 0 and not vs_base["undecidable"]
    assert record["promoted"] is wins
    assert record["aliases"] == (["challenger", "champion"] if wins else ["challenger"])
    expected = "no champion yet" if wins else "does not beat its base model: heldout.bits_per_byte vs base"
    assert expected in record["gate_reason"]
    on_disk = json.loads(Path(cold["summary_path"]).read_text())
    assert on_disk["stages"] == cold["stages"] and on_disk["config_path"] == str(tiny_config)
    assert list(on_disk["stages"]) == list(STAGES)  # the file reads in DAG order

    version = mlflow.MlflowClient().get_model_version("e2e-model", "1")
    eval_report = json.loads((Path(stages["evaluate"]["path"]) / "report.json").read_text())
    assert version.tags["eval_set_key"] == eval_report["eval_set_key"]  # scores name the set they came from
    echo = eval_report["suites"]["heldout"]["metrics"]["rougeL"]["systems"]["echo_input"]
    assert echo["ci"][0] <= echo["mean"] <= echo["ci"][1]
    # tiny.yaml runs 2 HumanEval problems and 4 next-line cases per model, each a per-item row
    evaluated_dir = Path(stages["evaluate"]["path"])
    assert eval_report["suites"]["humaneval"]["problems"] == 2
    assert eval_report["suites"]["humaneval"]["prompt_style"] == {
        "base": "raw",
        "finetuned": "template:alpaca",
    }
    humaneval = [json.loads(r) for r in (evaluated_dir / "humaneval.jsonl").read_text().splitlines()]
    assert len(humaneval) == 2 and all(set(r["scores"]) == {"base", "finetuned"} for r in humaneval)
    completion = [json.loads(r) for r in (evaluated_dir / "completion.jsonl").read_text().splitlines()]
    assert len(completion) == 4 and all(
        set(r["scores"]) == {"base", "finetuned", "previous_line"} for r in completion
    )
    run = mlflow.MlflowClient().get_run(record["run_id"])
    assert run.data.params["train.lora.r"] == "4"
    assert run.data.tags["stage.train.key"] == stages["train"]["key"] and run.data.tags["noop"] == "false"
    # one experiment per profile; a run name a person can read: profile, date, the last stage's key
    assert mlflow.MlflowClient().get_experiment(run.info.experiment_id).name == "finetune-tiny"
    assert run.info.run_name.startswith("tiny 20") and run.info.run_name.endswith(
        stages["register"]["key"][:8]
    )
    # headline numbers under headline/ (the UI's first chart section), the rest under stages/<stage>/
    means = eval_report["means"]
    assert run.data.metrics["headline/heldout.bits_per_byte"] == means["finetuned"]["heldout.bits_per_byte"]
    assert run.data.metrics["headline/heldout.bits_per_byte_base"] == means["base"]["heldout.bits_per_byte"]
    assert run.data.metrics["headline/humaneval.pass_at_1"] == means["finetuned"]["humaneval.pass_at_1"]
    assert (
        run.data.metrics["stages/evaluate/means.echo_input.heldout.rougeL"]
        == means["echo_input"]["heldout.rougeL"]
    )
    assert run.data.metrics["stages/train/steps"] == 6.0
    curve = mlflow.MlflowClient().get_metric_history(record["run_id"], "headline/loss")
    assert [m.step for m in curve] == [2, 4, 6]  # tiny.yaml: logging_steps 2, max_steps 6
    bpb = means["finetuned"]["heldout.bits_per_byte"]
    assert stages["evaluate"]["headline"].startswith("held-out loss ")  # then bits/byte, and the rest
    assert f", bits/byte {bpb:.3f} (base " in stages["evaluate"]["headline"]
    assert stages["train"]["headline"].startswith("lora, 6 steps, train loss ")  # smoothed: flows/summary.py
    scraped = json.loads((Path(stages["scrape"]["path"]) / "report.json").read_text())
    assert stages["scrape"]["headline"].endswith(f", {scraped['definitions']['with_doctests']} with doctests")
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(record["run_id"], "stages/train")}
    assert {"stages/train/loss.png", "stages/train/report.json", "stages/train/log_history.json"} <= artifacts
    clean = {f.path for f in mlflow.MlflowClient().list_artifacts(record["run_id"], "stages/clean")}
    assert {
        "stages/clean/rejected.jsonl",
        "stages/clean/rejections.table.json",
        "stages/clean/report.md",
    } <= clean


def test_registered_version_carries_its_lineage_and_card(cold, tiny_config):
    stages = cold["stages"]
    version = mlflow.MlflowClient().get_model_version("e2e-model", "1")
    for name in ("scrape", "synthesize", "clean", "tokenize", "train", "evaluate"):
        assert version.tags[f"stage.{name}.key"] == stages[name]["key"], name
    # not forced: the register key without the tracking URI
    assert version.tags["version_key"] == version_key(tiny_config, stages)
    assert len(version.tags["git_commit"].removesuffix("-dirty")) == 40
    evaluated = json.loads((Path(stages["evaluate"]["path"]) / "manifest.json").read_text())["outputs"]
    assert version.tags["benchmark.humaneval.key"] == evaluated["benchmark_keys"]["humaneval"]
    metadata = mlflow.models.get_model_info("models:/e2e-model/1").metadata
    assert metadata["template"]["name"] == "alpaca" and metadata["generation"] == evaluated["generation"]
    assert (
        metadata["config"]["train"]["lora"]["r"] == 4
        and metadata["stage_keys"]["train"] == stages["train"]["key"]
    )
    card = (Path(stages["register"]["path"]) / "README.md").read_text()
    assert card.startswith("---\nbase_model: scratch-llama\n")  # Hugging Face card metadata
    assert "| heldout.bits_per_byte | lower |" in card and stages["tokenize"]["key"] in card
    # MLflow stores the card's text and its metadata apart
    logged = Path(mlflow.artifacts.download_artifacts("models:/e2e-model/1"))
    assert card.endswith((logged / "model_card.md").read_text())
    assert yaml.safe_load((logged / "model_card_data.yaml").read_text())["base_model"] == "scratch-llama"


def test_registered_model_reproduces_the_evaluation(cold, tiny_config, capsys):
    """models:/...: loaded back with its stored template and generation settings, the registered model
    writes what the evaluation recorded for the fine-tuned model; `finetune generate` is that path."""
    from tasks.registration.serving import load_registered

    predictions = Path(cold["stages"]["evaluate"]["path"]) / "predictions.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()][:3]
    model = load_registered("models:/e2e-model/1")
    assert [c.text.strip() for c in model.complete([r["prompt"] for r in rows])] == [
        r["outputs"]["finetuned"] for r in rows
    ]
    instruction = "Write a Python function `add`."
    assert main(["generate", "--config", str(tiny_config), "--model", "1", instruction]) == 0
    expected = model.complete([model.format(instruction)])[0].text.strip()
    assert capsys.readouterr().out == (expected or "(empty)") + "\n"
    assert main(["generate", "--config", str(tiny_config), "--model", "9", "x"]) == 1
    assert "cannot load '9'" in capsys.readouterr().err


def test_evaluation_is_published_as_prefect_artifacts(cold):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            flow_run = ArtifactFilterFlowRunId(any_=[cold["prefect_flow_run_id"]])
            return await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=flow_run))

    published = asyncio.run(read())
    artifacts = {a.key: a for a in published}
    # keys name the profile (tiny's history does not mix with offline's), one artifact per key and run
    assert len(artifacts) == len(published)
    expected = {
        "tiny-evaluate-report",
        "tiny-evaluate-comparisons",  # one row per paired comparison, in the UI's table view
        "tiny-evaluate-predictions",
        "tiny-evaluate-completion",
        "tiny-evaluate-humaneval",
        "tiny-register-report",
        "tiny-clean-report",
        "tiny-clean-rejections",
        "tiny-train-report",  # train has no report.md: its steps, tokens and losses
        "tiny-mlflow-run",
    }
    assert expected <= set(artifacts)
    assert all(a.key.startswith("tiny-") and a.description for a in published)  # each says what it is
    # one progress artifact per stage that loops, moved to the end, whatever its number of loops
    progress = {
        a.key.removeprefix("tiny-").removesuffix("-progress"): a for a in published if a.type == "progress"
    }
    assert {"train", "evaluate"} <= set(progress) <= set(STAGES)
    assert {float(a.data) for a in progress.values()} == {100.0}
    assert "(loop " in progress["evaluate"].description  # evaluate generated for each model and suite
    train = artifacts["tiny-train-report"].data
    stages = cold["stages"]
    assert "| steps | 6 |" in train and f"`{stages['train']['path']}/loss.png`" in train
    train_report = json.loads((Path(stages["train"]["path"]) / "report.json").read_text())
    assert f"| last logged loss | {train_report['last_logged_loss']:.4f} |" in train
    links = artifacts["tiny-mlflow-run"].data  # from the flow run to its MLflow run and registered version
    assert cold["mlflow"]["run_id"] in links and "models:/e2e-model/1" in links
    assert cold["mlflow"]["gate_reason"] in artifacts["tiny-register-report"].data  # the gate's decision
    assert "| heldout.rougeL | higher |" in artifacts["tiny-evaluate-report"].data  # the comparisons table
    table = artifacts["tiny-evaluate-predictions"].data
    table = json.loads(table) if isinstance(table, str) else table
    generated = [row for row in table if "scores.finetuned.rougeL" in row]
    assert len(generated) == 4 and "scores.base.bits_per_byte" in table[-1]  # tiny.yaml: max_samples 4


def test_the_flow_run_is_named_for_its_profile_and_logs_the_end_of_run_table(cold):
    from prefect.client.orchestration import get_client

    from flows.summary import format_footer, format_table
    from tests.flows.helpers import flow_run_log_messages

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(cold["prefect_flow_run_id"])
    assert re.fullmatch(r"tiny \d{4}-\d\d-\d\d \d\d:\d\d", run.name)  # not two random words
    # what the command line prints at the end, in the run's log in the UI: the table, then the gate's line
    table = f"{format_table(cold)}\n\n{format_footer(cold)}"
    assert table in flow_run_log_messages(run.id, table)
    assert cold["mlflow"]["gate_reason"] in format_footer(cold)


def prefect_task_states(flow_run_id: str) -> dict[str, str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return {r.name: r.state.name for r in runs}

    return asyncio.run(read())


def test_warm_rerun_is_all_cached(cold, tiny_config):
    warm = finetune(config_path=str(tiny_config))
    assert {s["status"] for s in warm["stages"].values()} == {"cached"}
    # Prefect itself served the cache (its key is the stage key), so the UI shows the same thing
    assert prefect_task_states(warm["prefect_flow_run_id"]) == dict.fromkeys(STAGES, "Cached")
    assert {n: s["key"] for n, s in warm["stages"].items()} == {
        n: s["key"] for n, s in cold["stages"].items()
    }
    assert warm["mlflow"]["version"] == "1"  # nothing new registered
    assert warm["mlflow"]["run_id"] != cold["mlflow"]["run_id"]  # but its own MLflow run
    run = mlflow.MlflowClient().get_run(warm["mlflow"]["run_id"])
    assert run.data.tags["noop"] == "true" and run.data.metrics == {}  # recorded as a no-op, no copies
    assert run.data.tags["stage.train.status"] == "cached"


def test_force_train_reruns_train_and_after(cold, tiny_config, capsys):
    assert main(["run", "--config", str(tiny_config), "--force", "train", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    status = {n: s["status"] for n, s in forced["stages"].items()}
    assert status == {
        "scrape": "cached",
        "base_model": "cached",
        "synthesize": "cached",
        "datasets": "cached",
        "clean": "cached",
        "tokenize": "cached",
        "train": "executed",
        "evaluate": "executed",
        "register": "executed",
    }
    assert forced["mlflow"]["version"] == "2"
    # the cached stages' numbers are logged too: a run that trains is comparable as a whole
    run = mlflow.MlflowClient().get_run(forced["mlflow"]["run_id"])
    assert run.data.tags["noop"] == "false" and "stages/clean/rows_out" in run.data.metrics
    assert "challenger" in forced["mlflow"]["aliases"]
    tags = mlflow.MlflowClient().get_model_version("e2e-model", "2").tags
    assert tags["gate.reason"] == forced["mlflow"]["gate_reason"]  # the decision is on the version too


def test_only_without_cached_inputs_is_a_clear_error(prefect_server, tiny_config, tmp_path, capsys):
    raw = yaml.safe_load(tiny_config.read_text())
    raw["workspace"] = str(tmp_path / "empty")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    assert main(["run", "--config", str(path), "--only", "train"]) == 2
    err = capsys.readouterr().err
    assert "--only train needs the output of scrape, base_model, synthesize, clean, tokenize" in err
    # one command that builds every missing input and the stage asked for
    assert f"finetune run --config {path} --only scrape base_model synthesize clean tokenize train" in err
    assert not (tmp_path / "empty").exists()  # a refused run writes nothing: no summary, no stage folder
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before  # and no MLflow run


def test_force_outside_only_is_refused(prefect_server, tiny_config, capsys):
    assert main(["run", "--config", str(tiny_config), "--only", "tokenize", "--force", "train"]) == 2
    assert "--force train is not among --only tokenize" in capsys.readouterr().err


def test_register_is_redone_when_the_registry_lost_the_version(cold, tiny_config):
    client = mlflow.MlflowClient()
    versions = [v.version for v in client.search_model_versions("name='e2e-model'")]
    for version in versions:  # the MLflow store lost them; the workspace kept its register output
        client.delete_model_version("e2e-model", version)
    latest = max(int(v) for v in versions)
    again = finetune(config_path=str(tiny_config))
    assert again["stages"]["register"]["status"] == "executed"
    assert again["stages"]["evaluate"]["status"] == "cached"
    assert int(again["mlflow"]["version"]) == latest + 1


def test_only_reads_cached_inputs(cold, tiny_config):
    only = finetune(config_path=str(tiny_config), only=["evaluate"])
    assert only["stages"]["evaluate"]["status"] == "cached"
    # the inputs evaluate reads come from cache (scrape: the held-out code of the completion benchmark);
    # nothing else is touched, register does not run
    assert list(only["stages"]) == ["scrape", "base_model", "tokenize", "train", "evaluate"]
    # the stages it read from the workspace are in the flow run too, and say Cached
    assert prefect_task_states(only["prefect_flow_run_id"]) == dict.fromkeys(only["stages"], "Cached")


def test_runs_and_show_read_the_workspace(cold, tiny_config, capsys):
    assert main(["runs", "--config", str(tiny_config)]) == 0
    listed = capsys.readouterr().out
    assert cold["run_id"] in listed and "train:run" in listed and "-> v1" in listed
    [line] = [line for line in listed.splitlines() if line.startswith(cold["run_id"])]
    assert float(line.split()[3]) > 0 and line.split()[4] in ("s", "min")  # how long it took
    experiment = cold["mlflow"]["experiment_id"]
    assert f"/#/experiments/{experiment}/runs/{cold['mlflow']['run_id']}" in listed  # where it is in MLflow
    assert main(["show", "clean", "--config", str(tiny_config)]) == 0
    shown = capsys.readouterr().out
    assert f"data: {cold['stages']['clean']['path']}" in shown and "pairs: pairs.jsonl" in shown
    assert "# clean" in shown.lower() or "kept" in shown  # report.md's text


def test_a_failed_run_names_the_stage_and_the_command_to_resume(cold, tiny_config, tmp_path, caplog):
    raw = yaml.safe_load(tiny_config.read_text())
    raw["train"]["lora"]["target_modules"] = ["no_such_module"]  # fails in train, after tokenize
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", "--config", str(path)]) == 1
    hook = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]  # the on_failure hook
    assert len(hook) == 1 and hook[0].startswith(
        "stage 'train' failed: ValueError: train.lora.target_modules"
    )
    assert f"finetune run --config {path}" in hook[0] and f"-p config_path={path}" in hook[0]
    summaries = sorted((Path(raw["workspace"]) / "runs").glob("*/summary.json"))
    failed = json.loads(summaries[-1].read_text())
    assert failed["status"] == "failed" and failed["failed_stage"] == "train"
    assert failed["stages"]["tokenize"]["status"] == "cached"  # what was done is kept
