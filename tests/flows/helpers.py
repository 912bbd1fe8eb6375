"""Shared by the tests that start real servers in subprocesses (Prefect, MLflow, `make serve`)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
