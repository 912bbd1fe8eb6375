"""Shared by the tests that start real servers in subprocesses (Prefect, MLflow, `make serve`)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FINETUNE = str(Path(sys.executable).parent / "finetune")


def cli_env(api_url: str, root: Path) -> dict[str, str]:
    """The environment of a `finetune` subprocess: the test's Prefect server, its own MLflow store."""
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (root / "mlflow-artifacts").as_uri(),
    }


def unfinished_folders(workspace: Path) -> list[str]:
    """Folders under `workspace/stages` that are neither a finished stage output nor the lock folder."""
    return [
        str(entry)
        for parent in (workspace / "stages").iterdir()
        for entry in parent.iterdir()
        if entry.is_dir() and entry.name != ".locks" and not (entry / "manifest.json").is_file()
    ]


def flow_run_log_messages(flow_run_id, wanted: str, wait_s: int = 60) -> list[str]:
    """The messages of a flow run's log in Prefect, once `wanted` is among them (or after `wait_s`): the
    log worker sends in batches and the server stores them in its own time, later on a loaded machine."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    messages: list[str] = []
    for _ in range(wait_s):
        with get_client(sync_client=True) as client:
            found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        messages = [log.message for log in found]
        if wanted in messages:
            break
        time.sleep(1)
    return messages
