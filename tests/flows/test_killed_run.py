"""A run killed mid-training (SIGKILL to its whole process group, as a lost worker or an OOM kill would
leave it) and started again with the same command: the finished stages are reused, training resumes from
its last checkpoint, the run completes, nothing the killed run left behind stays in the workspace, and its
runs in MLflow and Prefect no longer read RUNNING. What it reports is true of the whole training: the loss
and time of all its steps, and that it resumed (report, end-of-run table, MLflow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.flows.helpers import FINETUNE, cli_env, unfinished_folders

pytestmark = pytest.mark.slow

MAX_STEPS, SAVE_STEPS = 240, 20


def test_killed_run_resumes_from_finished_stages_and_checkpoint(prefect_server, tiny_profile, tmp_path):
    config = tiny_profile(lambda raw: raw["train"].update(max_steps=MAX_STEPS, save_steps=SAVE_STEPS))
    command = [FINETUNE, "run", "--config", str(config)]
    env = cli_env(prefect_server, tmp_path)
    workspace = tmp_path / "ws"
    log = tmp_path / "killed.log"
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    # trainer_state.json is the last file a checkpoint gets: a folder without it is still being written
    finished = workspace / "stages" / "train"
    deadline = time.monotonic() + 180
    while not (saved := list(finished.glob(".resume-*/checkpoints/checkpoint-*/trainer_state.json"))):
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the run leads its own process group
    proc.wait(timeout=30)
    seen_step = max(int(p.parent.name.rsplit("-", 1)[1]) for p in saved)
    assert not (workspace / "runs").exists()  # killed: no summary, nothing published for train
    assert not [p for p in finished.iterdir() if p.is_symlink()]

    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [summary_path] = (workspace / "runs").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    stages = summary["stages"]
    assert summary["status"] == "completed"
    assert {s: stages[s]["status"] for s in ("scrape", "base_model", "synthesize", "clean", "tokenize")} == {
        s: "cached" for s in ("scrape", "base_model", "synthesize", "clean", "tokenize")
    }
    assert stages["train"]["status"] == "executed"
    report = json.loads((workspace / "stages" / "train" / stages["train"]["key"] / "report.json").read_text())
    resumed_from = report["resumed_from_step"]
    assert SAVE_STEPS <= seen_step <= resumed_from < MAX_STEPS  # not from scratch
    assert report["steps"] == MAX_STEPS
    # the record covers every step, the killed attempt's too: every 2 steps logged (tiny's logging_steps),
    # so the mean over all steps is the mean of the logged losses; the time adds up both attempts
    history = json.loads(
        (workspace / "stages" / "train" / stages["train"]["key"] / "log_history.json").read_text()
    )
    logged = [h for h in history if "loss" in h]
    assert [h["step"] for h in logged] == list(range(2, MAX_STEPS + 1, 2))
    assert report["train_loss"] == pytest.approx(sum(h["loss"] for h in logged) / len(logged), rel=1e-6)
    [before] = [h for h in logged if h["step"] == resumed_from]  # the killed attempt's time, as it logged it
    assert report["train_runtime_s"] > logged[-1]["train_runtime"] + 0.5 * before["train_runtime"]
    [train_row] = [line for line in done.stdout.splitlines() if line.startswith("train ")]
    assert f"{MAX_STEPS} steps (resumed from step {resumed_from}), train loss" in train_row
    assert stages["evaluate"]["status"] == stages["register"]["status"] == "executed"
    # the killed run's unfinished version folder and its resume folder are gone
    assert unfinished_folders(workspace) == []
    assert not list(finished.glob(".resume-*"))

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    finished_run = client.get_run(summary["mlflow"]["run_id"])
    experiment = finished_run.info.experiment_id
    metrics = finished_run.data.metrics  # the train report's numbers, through the stage log
    assert metrics["stages/train/resumed_from_step"] == resumed_from
    assert metrics["headline/train_loss"] == pytest.approx(report["train_loss"])
    assert metrics["stages/train/train_runtime_s"] == pytest.approx(report["train_runtime_s"])
    [killed] = client.search_runs([experiment], filter_string=f"tags.pid = '{proc.pid}'")
    assert killed.info.status == "KILLED"  # marked by the second run, not left RUNNING forever

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    from flows.flow_runs import PID_LABEL

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["finetune"])))
        [killed_run] = [r for r in runs if r.labels.get(PID_LABEL) == str(proc.pid)]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[killed_run.id])))
        again = client.read_flow_run(summary["prefect_flow_run_id"])
    assert killed_run.state.name == "Crashed" and f"pid {proc.pid}" in killed_run.state.message
    assert {t.name: t.state.name for t in tasks}["train"] == "Crashed"  # the stage it died in
    assert again.state.name == "Completed" and killed_run.name.split()[0] == again.name.split()[0] == "tiny"
