"""deployment.yaml against a real (test) Prefect server: `prefect deploy` accepts it as written. A process
worker running `prefect deployment run finetune/nightly` to completion is test_serve.py's README test."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

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
