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
