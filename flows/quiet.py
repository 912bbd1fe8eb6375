"""Keep library chatter off the user's terminal and in a log file (`finetune run --verbose` shows it all).

Libraries write their warnings, event lines and progress bars to whatever `sys.stderr` is when they
write (Python's warnings, MLflow's event stream, tqdm bars created later, transformers' log handler,
created on first use). Prefect's console handler instead holds the stream it was given when Prefect set
up logging. So once Prefect is imported, pointing `sys.stderr` at a log file sends the libraries there
and leaves Prefect's run log, our progress bars (written to `sys.__stderr__`) and the final table on the
terminal. Everything is restored on exit, so an in-process caller (the tests) gets its stderr back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

# Libraries that log through `logging` at WARNING about things a user cannot act on (bitsandbytes: an optional
# CPU kernel package it could not import, on every QLoRA or merge-check load).
LIBRARY_LOGGERS = ("bitsandbytes",)
# Library progress bars that say nothing a user needs (loading 11 weights, saving a 79-row dataset).
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # the register stage downloads the evaluate report
}


def log_path(workspace: Path) -> Path:
    return workspace / "logs" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"


@contextlib.contextmanager
def library_output_to(path: Path) -> Iterator[Path]:
    import prefect  # noqa: F401 - its console handler must bind to the real stderr first

    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = sys.stderr
    with open(path, "a", buffering=1) as log:
        sys.stderr = log
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved_loggers = []
        for name in LIBRARY_LOGGERS:  # their records would reach Prefect's console handler through the root
            library = logging.getLogger(name)
            saved_loggers.append((library, library.propagate))
            library.addHandler(handler)
            library.propagate = False
        try:
            yield path
        finally:
            sys.stderr = saved
            for library, propagate in saved_loggers:
                library.removeHandler(handler)
                library.propagate = propagate
