"""What the process is running inside of, for stage code that must not import the orchestration: the run
logger (Prefect's inside a flow or task run, so stage logs show in its UI; a plain logger elsewhere) and
the Dask cluster of a flow run on prefect-dask's DaskTaskRunner. A leaf: it imports no project module, and
Prefect only lazily, where a run exists; the stage tasks live with the flows (flows/stage_tasks.py).
"""

from __future__ import annotations

import contextlib
import logging
import sys


def logger() -> logging.Logger:
    """Prefect's run logger inside a task or flow (shows in the UI), a plain logger elsewhere (tests)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("finetune")


@contextlib.contextmanager
def flow_dask_client():
    """A Dask client of the running flow's prefect-dask DaskTaskRunner cluster, or None outside such a flow:
    a stage with `executor.backend: dask` and no address runs its chunks there (tasks/common/parallel.py)
    instead of starting a cluster of its own."""
    if "prefect_dask" not in sys.modules:  # no flow in this process was given a DaskTaskRunner
        yield None
        return
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner, get_dask_client

    context = FlowRunContext.get()
    if context is None or not isinstance(context.task_runner, DaskTaskRunner):
        yield None
        return
    with get_dask_client() as client:
        yield client
