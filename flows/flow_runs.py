"""The flow run as Prefect shows it: its name (the profile and the date, not two random words), its owner
(the host and process running it, as labels), the flow runs a killed process left RUNNING, and the lines
that go to its log in the UI alone.

A `kill -9` (an OOM kill, a lost machine) gives Prefect no chance to record the end of a run: without a
worker watching it, the flow run stays RUNNING forever. So every run labels itself with its host and
process id, and the next run on that host marks Crashed each RUNNING run of this flow whose process is
gone, as flows/tracking.py `end_orphaned_runs` does for MLflow's runs. A run of another flow, a run on
another host, a run without the labels (from before them, or started elsewhere) and a run whose process
is alive are left alone.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from tasks.common.publish import HOST, process_alive

FLOW = "finetune"
HOST_LABEL, PID_LABEL = "finetune.host", "finetune.pid"


def flow_run_name() -> str:
    """The flow's `flow_run_name`: `<profile> <date UTC>`, plus the options that narrow the run
    (`tiny 2026-12-08 14:03 --only train`), as the MLflow run of the same run is named."""
    from prefect.runtime import flow_run

    from pipeline_config import ConfigError, load_config

    parameters = flow_run.parameters
    config_path = parameters.get("config_path") or "pipeline_config/offline.yaml"
    try:
        profile = load_config(config_path).name
    except (ConfigError, OSError):  # the flow itself reports a bad config; the name must not fail first
        profile = Path(config_path).stem
    name = f"{profile} {datetime.now(UTC):%Y-%m-%d %H:%M}"
    for option in ("only", "force"):
        if parameters.get(option):
            name += f" --{option} {' '.join(parameters[option])}"
    return name


def claim(flow_run_id: str) -> None:
    """Label the running flow run with this host and process, so a later run can tell that it died."""
    with _client() as client:
        client.update_flow_run_labels(UUID(flow_run_id), {HOST_LABEL: HOST, PID_LABEL: str(os.getpid())})


def mark_crashed(current: str | None = None) -> list[str]:
    """Mark Crashed the RUNNING flow runs of this flow that a dead process of this host owned (and their
    RUNNING task runs: the stage it was in); returns their names."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    marked = []
    with _client() as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])),
            flow_run_filter=FlowRunFilter(state=running),
        )
        for run in runs:
            pid = str(run.labels.get(PID_LABEL, ""))
            if str(run.id) == current or run.labels.get(HOST_LABEL) != HOST or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or process_alive(int(pid)):
                continue
            message = f"its process (pid {pid} on {HOST}) is gone: killed; marked by the next run"
            stuck = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))
                ),
            )
            for task_run in stuck:
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            marked.append(run.name)
    return marked


def ui_logger() -> logging.Logger:
    """A logger whose lines reach the flow run's log in the Prefect UI and not the terminal: for what the
    command line prints itself at the end of a run (the table, the gate), which would show twice there."""
    from prefect.logging.handlers import APILogHandler

    found = logging.getLogger("finetune.run")
    if not any(isinstance(h, APILogHandler) for h in found.handlers):
        found.addHandler(APILogHandler())
    # set on every call: a logging set-up run since (Prefect's, a library's) may have reset them
    found.setLevel(logging.INFO)
    found.propagate = False  # the root logger's handler is Prefect's console one
    found.disabled = False
    return found


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)
