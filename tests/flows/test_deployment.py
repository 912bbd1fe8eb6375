"""deployment.yaml against a real (test) Prefect server: `prefect deploy` accepts it, and a process worker
runs `prefect deployment run finetune/nightly` to completion."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import pytest
import yaml

from flows.runner import STAGES
from tests.conftest import REPO
from tests.flows.helpers import PREFECT

pytestmark = pytest.mark.slow


def prefect_cli(*args: str, api_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api_url, "FINETUNE_REPO_DIR": str(REPO)}
    return subprocess.run(
        [PREFECT, "--no-prompt", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def deployed(prefect_server) -> str:
    pool = prefect_cli("work-pool", "create", "finetune-process", "--type", "process", api_url=prefect_server)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = prefect_cli("deploy", "--prefect-file", "deployment.yaml", "--all", api_url=prefect_server)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    return prefect_server


def test_prefect_deploy_accepts_deployment_yaml(deployed):
    from prefect.client.orchestration import get_client

    async def read(name: str):
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    nightly = asyncio.run(read("finetune/nightly"))
    assert nightly.work_pool_name == "finetune-process"
    assert nightly.parameters == {"config_path": "pipeline_config/offline.yaml"}
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    steps = nightly.pull_steps
    # $FINETUNE_REPO_DIR is resolved when deploying: the worker runs the flow from this checkout
    assert steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    rerun = asyncio.run(read("finetune/rerun-stage"))
    assert rerun.parameters["force"] == ["train"] and not rerun.schedules


def test_worker_runs_the_nightly_deployment(deployed, tmp_path):
    raw = yaml.safe_load((REPO / "pipeline_config" / "tiny.yaml").read_text())
    raw["workspace"] = str(tmp_path / "ws")
    raw["register"]["model_name"] = "deployment-test"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PREFECT_API_URL": deployed}
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "finetune-process"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        run = prefect_cli(
            "deployment",
            "run",
            "finetune/nightly",
            "-p",
            f"config_path={config}",
            "--watch",
            "--watch-timeout",
            "280",
            api_url=deployed,
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)  # the worker and the flow-run processes it started
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a busy machine: the result below is what this test is about
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [summary] = (tmp_path / "ws" / "runs").glob("*/summary.json")
    record = json.loads(summary.read_text())
    assert record["status"] == "completed"
    assert {n: s["status"] for n, s in record["stages"].items()} == dict.fromkeys(STAGES, "executed")
    assert record["mlflow"]["model_name"] == "deployment-test" and "challenger" in record["mlflow"]["aliases"]
    assert record["mlflow"]["gate_reason"]  # promoted or not, the reason is recorded
