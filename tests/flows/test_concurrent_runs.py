"""Two `finetune run` processes started at once on one config and one workspace, as two users (or two
deployment runs) would: each stage is computed by one of them while the other waits on the stage-key lock
and reuses it; no half-written folder is left and no run reads one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import pytest

from flows.finetune import STAGES
from tests.conftest import REPO
from tests.flows.helpers import FINETUNE, cli_env, unfinished_folders

pytestmark = pytest.mark.slow


def task_runs(flow_run_id: str) -> dict[str, object]:
    """The flow run's task runs by stage name, from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run for run in runs}


def check_readable(folder: Path) -> None:
    """Every JSON and JSONL file of a published stage folder parses to its last line."""
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    for path in folder.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)


def test_two_runs_of_one_config_share_every_stage(prefect_server, tiny_profile, tmp_path):
    config = tiny_profile()
    env = cli_env(prefect_server, tmp_path)
    logs = [tmp_path / f"run-{i}.log" for i in (0, 1)]
    procs = [
        subprocess.Popen(
            [FINETUNE, "run", "--config", str(config), "--json"],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]

    workspace = tmp_path / "ws"
    summaries = [json.loads(p.read_text()) for p in sorted((workspace / "runs").glob("*/summary.json"))]
    assert len(summaries) == 2 and {s["status"] for s in summaries} == {"completed"}
    first, second = (s["stages"] for s in summaries)
    assert list(first) == list(second) == list(STAGES)
    for stage in STAGES:
        a, b = first[stage], second[stage]
        assert a["key"] == b["key"], stage
        assert sorted((a["status"], b["status"])) == ["cached", "executed"], (stage, a, b)
        # both read the one published version: the waiting run never built (or read) a copy of its own
        published = (workspace / "stages" / stage / a["key"]).resolve()
        assert Path(a["path"]) == Path(b["path"]) == published, stage
        manifest = json.loads((published / "manifest.json").read_text())
        assert manifest["key"] == a["key"] and manifest["rows_out"] == a["rows_out"] == b["rows_out"]
        check_readable(published)  # report.json, the JSONL data, model configs
        named = [v for k, v in manifest["outputs"].items() if k.endswith("_dir") or str(v).endswith(".json")]
        named += [v for v in manifest["outputs"].values() if str(v).endswith(".jsonl")]
        assert all((published / v).exists() for v in named), (stage, manifest["outputs"])
    assert unfinished_folders(workspace) == []
    assert not list((workspace / "stages").glob("*/.link-*"))

    # The runs overlapped: some stage's task in one run started while the other run was still computing
    # it, waited on the key lock, and ended Cached (the UI says so, not "Completed in 0.0 s").
    runs = [task_runs(s["prefect_flow_run_id"]) for s in summaries]
    waited = []
    for stage in STAGES:
        executed, cached = (0, 1) if first[stage]["status"] == "executed" else (1, 0)
        builder, waiter = runs[executed][stage], runs[cached][stage]
        assert waiter.state.name == "Cached", (stage, waiter.state)
        if waiter.start_time and waiter.start_time < builder.end_time:  # no start: a cache hit
            waited.append(stage)
    assert waited, "the two runs never worked on the same stage at once: the test did not test the lock"

    # one registered version, not one per run
    client = mlflow.MlflowClient(
        tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"]
    )
    versions = client.search_model_versions("name = 'code-finetune-tiny'")
    assert [str(v.version) for v in versions] == ["1"]

    # started at the same instant, the later of the two to look for other runs sees the earlier one
    warned = [log for log in logs if "another finetune run is active on this machine" in log.read_text()]
    assert warned, "neither run warned about the other"
