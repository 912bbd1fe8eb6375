"""Keep library chatter off the user's terminal and in a log file (`finetune run --verbose` shows it all).

Libraries write their warnings, event lines and progress bars to whatever `sys.stderr` is when they
write (Python's warnings, MLflow's event stream, tqdm bars created later, transformers' log handler,
created on first use). Prefect's console handler instead holds the stream it was given when Prefect set
up logging. So once Prefect is imported, pointing `sys.stderr` at a log file sends the libraries there
and leaves Prefect's run log, our progress bars (written to `sys.__stderr__`) and the final table on the
terminal. A filter on that handler sends it the project's own lines only (and every warning): a library's
INFO lines (Prefect's state changes, each a row of the end-of-run table) and our lines too detailed for
the terminal (marked `extra={"detail": True}`: a line per logged training step, which the progress bar and
the table sum up) go to the log file; the Prefect UI gets them all. Everything is restored on exit, so an
in-process caller (the tests) gets its stderr back.
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
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # a line of the log file


def log_path(workspace: Path) -> Path:
    return workspace / "logs" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}.log"


@contextlib.contextmanager
def library_output_to(path: Path) -> Iterator[Path]:
    """A flow run's library output to the log file at `path`: what libraries write to stderr, and of what
    reaches Prefect's console handler, the INFO lines libraries log (Prefect's own: "Task run 'clean' -
    Finished in state Completed()", its temporary server's start) and our details (`extra={"detail": True}`:
    the trainer's line per logged step, the training ranks' output). The Prefect UI still gets every line;
    the terminal keeps the stages' news, warnings, progress bars and the table."""
    # Prefect's logging set-up (`import prefect` alone defers it): its console handler must bind to the real
    # stderr first
    import prefect.main  # noqa: F401
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    with stderr_to(path) as handler:
        # which task or flow run a line is from, as the terminal would have said
        handler.setFormatter(
            PrefectFormatter(
                FORMAT,
                task_run_fmt=FORMAT.replace("%(name)s", "task run %(task_run_name)r"),
                flow_run_fmt=FORMAT.replace("%(name)s", "flow run %(flow_run_name)r"),
            )
        )
        consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
        to_file = NotForTheTerminal(handler)
        for console in consoles:
            console.addFilter(to_file)
        try:
            yield path
        finally:
            for console in consoles:
                console.removeFilter(to_file)


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[logging.Handler]:
    """`sys.stderr` (and LIBRARY_LOGGERS) to the log file at `path`, with QUIET_ENV's progress bars off;
    the handler that writes the file. Alone, for a command with no flow run (`finetune generate`)."""
    unset = [name for name in QUIET_ENV if name not in os.environ]  # a user's own choice stays
    os.environ.update({name: QUIET_ENV[name] for name in unset})
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = sys.stderr
    with open(path, "a", buffering=1) as log:
        sys.stderr = log
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(FORMAT))
        saved_loggers = []
        for name in LIBRARY_LOGGERS:  # their records would reach Prefect's console handler through the root
            library = logging.getLogger(name)
            saved_loggers.append((library, library.propagate))
            library.addHandler(handler)
            library.propagate = False
        try:
            yield handler
        finally:
            sys.stderr = saved
            for name in unset:
                os.environ.pop(name, None)
            for library, propagate in saved_loggers:
                library.removeHandler(handler)
                library.propagate = propagate


# where the project's own log lines come from (a record's pathname is its code's file)
OWN_SOURCES = tuple(str(Path(__file__).parent.parent / name) + os.sep for name in ("flows", "tasks"))


class NotForTheTerminal(logging.Filter):
    """On a console handler: a library's INFO (or DEBUG) record, or one of ours marked `detail`, goes to
    `handler` (the log file) instead."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.levelno < logging.WARNING and not record.pathname.startswith(OWN_SOURCES)
        if library or getattr(record, "detail", False):
            self.handler.handle(record)
            return False
        return True
