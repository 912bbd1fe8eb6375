"""The flow run as a person finds it in the Prefect UI: named after its profile and date, marked Crashed
once a later run finds its process gone (and only then), and with the end-of-run lines in its log."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from uuid import UUID

import pytest

from flows import flow_runs
from tasks.common.publish import HOST
from tests.flows.helpers import flow_run_log_messages


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.fixture
def placeholder_run(prefect_server):
    """placeholder_run(flow_name, labels) -> the id of a new flow run of `flow_name` in RUNNING, owned as
    `labels` say, as a killed process leaves its run; those still RUNNING after the test are cancelled."""
    from prefect import flow
    from prefect.states import Cancelled, Running

    made: list[UUID] = []

    def make(flow_name: str, labels: dict[str, str]) -> UUID:
        @flow(name=flow_name)
        def placeholder():
            pass

        with _client() as client:
            run = client.create_flow_run(placeholder, state=Running())
            client.update_flow_run_labels(run.id, labels)
        made.append(run.id)
        return run.id

    yield make
    with _client() as client:
        for run_id in made:
            if client.read_flow_run(run_id).state.is_running():
                client.set_flow_run_state(run_id, Cancelled(message="test over"), force=True)


def dead_pid() -> int:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # its pid now names no process
    return ended.pid


def _states(flow_run_id: UUID) -> tuple[str, list[str]]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as client:
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return run.state.name, [t.state.name for t in tasks]


def test_only_a_run_whose_process_on_this_host_is_gone_is_marked_crashed(placeholder_run):
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        owner = {flow_runs.HOST_LABEL: HOST, flow_runs.PID_LABEL: str(dead_pid())}
        killed = placeholder_run(flow_runs.FLOW, owner)
        untouched = {
            "its process is alive": placeholder_run(
                flow_runs.FLOW, {**owner, flow_runs.PID_LABEL: str(alive.pid)}
            ),
            "another host's": placeholder_run(flow_runs.FLOW, {**owner, flow_runs.HOST_LABEL: "elsewhere"}),
            "another flow's": placeholder_run("another-flow", owner),
            "no owner recorded": placeholder_run(flow_runs.FLOW, {}),
            "the run that looks": placeholder_run(flow_runs.FLOW, owner),
        }
        marked = flow_runs.mark_crashed(current=str(untouched["the run that looks"]))
        with _client() as client:
            assert client.read_flow_run(killed).name in marked
            state = client.read_flow_run(killed).state
        assert state.name == "Crashed" and f"pid {owner[flow_runs.PID_LABEL]} on {HOST}" in state.message
        for why, run_id in untouched.items():
            assert _states(run_id)[0] == "Running", why
    finally:
        alive.kill()
        alive.wait()


def test_a_killed_runs_running_stage_is_marked_crashed_with_it(placeholder_run):
    """The task run the killed process was in (its stage) would stay Running under a Crashed flow run."""
    from prefect import task
    from prefect.states import Running

    @task(name="train")
    def train():
        pass

    run_id = placeholder_run(
        flow_runs.FLOW, {flow_runs.HOST_LABEL: HOST, flow_runs.PID_LABEL: str(dead_pid())}
    )
    with _client() as client:
        client.create_task_run(train, flow_run_id=run_id, dynamic_key="0", name="train", state=Running())
    assert _states(run_id) == ("Running", ["Running"])
    flow_runs.mark_crashed()
    assert _states(run_id) == ("Crashed", ["Crashed"])


def test_flow_run_is_named_after_the_profile_and_date(prefect_server, tiny_profile):
    from prefect import flow
    from prefect.context import get_run_context

    @flow(name="finetune-name-probe", flow_run_name=flow_runs.flow_run_name)
    def probe(config_path: str, only: list[str] | None = None, force: list[str] | None = None) -> str:
        return get_run_context().flow_run.name

    assert re.fullmatch(r"tiny \d{4}-\d\d-\d\d \d\d:\d\d --only train", probe(str(tiny_profile()), ["train"]))
    # a config that does not load is the flow's to report: the name still comes, from the file name
    assert probe("pipeline_config/no-such-profile.yaml").startswith("no-such-profile 20")


def test_ui_logger_writes_to_the_flow_runs_log_and_not_the_console(prefect_server):
    from prefect import flow
    from prefect.context import get_run_context

    @flow
    def logs() -> UUID:
        flow_runs.ui_logger().info("stage  status\nclean  cached")
        return get_run_context().flow_run.id

    # what reaches the root logger (Prefect's console handler is there); not pytest's caplog, which also
    # attaches itself to every non-propagating logger that exists when a test starts, this one included
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger().addHandler(handler)
    try:
        flow_run_id = logs()
    finally:
        logging.getLogger().removeHandler(handler)
    wanted = "stage  status\nclean  cached"
    assert wanted in flow_run_log_messages(flow_run_id, wanted)
    assert "clean  cached" not in console.getvalue()
