"""`make serve` / `make status` / `make stop` (ops/servers.py), and the README's nightly-deployment commands
run as written against the servers it starts: free ports, all state under tmp_path, nothing left running."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time

import pytest
import requests

from ops import processes, servers
from tests.conftest import REPO
from tests.flows.helpers import free_port

SERVICES = ("prefect-server", "mlflow-server", "worker")
FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


TINY = "prefect deployment run finetune/nightly -p config_path=pipeline_config/tiny.yaml"
RERUN = TINY.replace("/nightly", "/rerun-stage") + """ -p force='["evaluate"]'"""


def readme_line(command: str) -> str:
    """The line of the README's nightly-deployment commands that runs `command` (its comment included)."""
    section = (REPO / "README.md").read_text().split("\n## Nightly deployment\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    [line] = [line for line in block.splitlines() if line.split(" #")[0].rstrip() == command]
    return line


class Served:
    def __init__(self, root):
        self.root = root
        self.ports = {"PREFECT_PORT": free_port(), "MLFLOW_PORT": free_port()}
        # as a user's shell: not a sub-make of `make test` (MAKELEVEL would make make print its directory)
        shell = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
        self.env = {
            **shell,
            **{k: str(v) for k, v in self.ports.items()},
            "SERVE_DIR": str(root / "serve"),
            "MLFLOW_STORE": str(root / "mlflow"),
            "FINETUNE_WORKSPACE": str(root / "ws"),  # the worker's, so every deployment run's
        }
        self.api = f"http://127.0.0.1:{self.ports['PREFECT_PORT']}/api"
        self.mlflow = f"http://127.0.0.1:{self.ports['MLFLOW_PORT']}"

    def make(self, target: str, timeout: float = 420) -> str:
        done = subprocess.run(
            ["make", target], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"make {target}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def pids(self) -> dict[str, str]:
        return {s: (self.root / "serve" / f"{s}.pid").read_text() for s in SERVICES}

    def readme(self, line: str) -> str:
        """`line` from the README, after its set-up lines with this test's ports."""
        exports = [
            readme_line("export PREFECT_API_URL=http://127.0.0.1:4200/api").replace(
                ":4200", f":{self.ports['PREFECT_PORT']}"
            ),
            readme_line("export MLFLOW_TRACKING_URI=http://127.0.0.1:5000").replace(
                ":5000", f":{self.ports['MLFLOW_PORT']}"
            ),
        ]
        script = "\n".join([readme_line("source .venv/bin/activate"), *exports, line])
        done = subprocess.run(
            ["bash", "-euc", script], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def run_to_completion(self, line: str, timeout: float = 420) -> dict:
        """Run a README `prefect deployment run` line, wait for the flow run, return its summary.json."""
        [flow_run_id] = re.findall(r"UUID: ([0-9a-f-]{36})", self.readme(line))
        deadline = time.monotonic() + timeout
        while (state := requests.get(f"{self.api}/flow_runs/{flow_run_id}", timeout=10).json())[
            "state_type"
        ] not in FINISHED:
            assert time.monotonic() < deadline, f"flow run still {state['state_type']} after {timeout} s"
            time.sleep(3)
        log = (self.root / "serve" / "logs" / "worker.log").read_text()[-4000:]
        assert state["state_type"] == "COMPLETED", log
        [summary] = [
            record
            for path in (self.root / "ws" / "runs").glob("*/summary.json")
            if (record := json.loads(path.read_text()))["prefect_flow_run_id"] == flow_run_id
        ]
        return summary


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("serve"))
    started = time.monotonic()
    served.output = served.make("serve")
    served.serve_seconds = time.monotonic() - started
    yield served
    # a failed test must not leave servers behind: stop, then make sure of it
    pids = {s: p for s in SERVICES if (p := servers.read_pid(servers_setup(served), s))}
    subprocess.run(["make", "stop"], cwd=REPO, env=served.env, capture_output=True, timeout=180)
    for pid, start in pids.values():
        processes.terminate(pid, start)


def servers_setup(served: Served) -> servers.Setup:
    return servers.Setup(
        state=served.root / "serve",
        prefect_port=served.ports["PREFECT_PORT"],
        mlflow_port=served.ports["MLFLOW_PORT"],
        store=served.root / "mlflow",
        timeout=60,
    )


@pytest.mark.slow
def test_serve_starts_each_service_once_and_healthy(served):
    print(f"make serve took {served.serve_seconds:.1f} s")
    assert "started: prefect-server, mlflow-server, worker" in served.output
    assert requests.get(f"{served.api}/health", timeout=10).json() is True
    assert requests.get(f"{served.mlflow}/health", timeout=10).ok
    # the two UIs and the lines the README tells the user to export, with this test's ports
    assert f"Prefect UI: http://127.0.0.1:{served.ports['PREFECT_PORT']}" in served.output
    assert f"MLflow UI:  {served.mlflow}" in served.output
    for line in served.readme("env | grep -E '^(PREFECT_API_URL|MLFLOW_TRACKING_URI)='").split():
        assert f"  export {line}\n" in served.output
    deployments = requests.post(f"{served.api}/deployments/filter", json={}, timeout=10).json()
    assert sorted(d["name"] for d in deployments) == ["nightly", "rerun-stage"]
    limits = requests.post(f"{served.api}/v2/concurrency_limits/filter", json={}, timeout=10).json()
    assert {x["name"]: x["limit"] for x in limits} == servers.RESOURCE_LIMITS  # what stages queue on

    before = served.pids()
    again = served.make("serve", timeout=60)
    assert "already running: nothing started" in again and served.pids() == before

    status = served.make("status", timeout=60)
    for service in SERVICES:
        pid = before[service].split()[0]
        assert re.search(rf"^{service} +running +pid {pid} .* healthy", status, re.M), status


@pytest.mark.slow
def test_readme_deployment_commands_run_on_the_worker(served):
    from flows.finetune import STAGES

    first = served.run_to_completion(readme_line(TINY))
    assert first["status"] == "completed" and first["profile"] == "tiny"
    assert {n: s["status"] for n, s in first["stages"].items()} == dict.fromkeys(STAGES, "executed")
    assert (
        "challenger" in first["mlflow"]["aliases"] and first["mlflow"]["gate_reason"]
    )  # promoted or not: why
    # the worker logged through the MLflow server make serve started, into its store
    assert first["mlflow"]["tracking_uri"] == served.mlflow
    run = requests.get(
        f"{served.mlflow}/api/2.0/mlflow/runs/get", params={"run_id": first["mlflow"]["run_id"]}, timeout=10
    ).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert (served.root / "mlflow" / "mlflow.db").is_file()

    # one stage again: evaluate and what follows it are rebuilt, the stages before it reused (unless their
    # code changed in between: their key says so)
    rerun = served.run_to_completion(readme_line(RERUN))
    for name, stage in rerun["stages"].items():
        forced = name in ("evaluate", "register") or stage["key"] != first["stages"][name]["key"]
        assert stage["status"] == ("executed" if forced else "cached"), (name, rerun["stages"])


@pytest.mark.slow
def test_the_nightly_schedule_queues_runs(served):
    """The server's scheduler turns deployment.yaml's cron into scheduled flow runs: without them, nothing
    runs at night (Prefect 3.8.8's scheduler fails on SQLAlchemy 2.1: "Can't evaluate bulk DML statement")."""
    [nightly] = requests.post(
        f"{served.api}/deployments/filter", json={"deployments": {"name": {"any_": ["nightly"]}}}, timeout=10
    ).json()
    query = {
        "deployments": {"id": {"any_": [nightly["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }
    deadline = time.monotonic() + 90  # the scheduler looks at recently changed deployments every few seconds
    while not (runs := requests.post(f"{served.api}/flow_runs/filter", json=query, timeout=10).json()):
        if time.monotonic() > deadline:
            log = (served.root / "serve" / "logs" / "prefect-server.log").read_text()
            pytest.fail(
                f"no scheduled run of finetune/nightly after 90 s; the server log ends:\n{log[-2500:]}"
            )
        time.sleep(3)
    assert {run["expected_start_time"][11:16] for run in runs} == {"02:00"}


@pytest.mark.slow
def test_stop_leaves_no_process_behind(served):
    setup = servers_setup(served)
    records = {s: servers.read_pid(setup, s) for s in SERVICES}
    family = {pid: start for pid, _ in records.values() for pid, start in processes.family(pid).items()}
    assert set(family) > {pid for pid, _ in records.values()}  # the servers' own children are counted too

    output = served.make("stop", timeout=180)

    assert [line.split(":")[0] for line in output.splitlines()] == [
        "worker",
        "mlflow-server",
        "prefect-server",
    ]
    assert not [pid for pid, start in family.items() if processes.alive(pid, start)]
    assert not list((served.root / "serve").glob("*.pid"))
    assert not servers.port_taken(served.ports["PREFECT_PORT"])
    assert not servers.port_taken(served.ports["MLFLOW_PORT"])
    assert "stopped" in served.make("status", timeout=60)
    for log in (served.root / "serve" / "logs").glob("*.log"):
        assert not unexpected_sqlite_locks(log.read_text()), log.name


# Prefect's server on sqlite can fail a worker's heartbeat upsert under load ("database is locked",
# PrefectHQ/prefect#17566); it closes the worker's channel as retryable and the worker reconnects. Any other
# statement locked out (the telemetry of several processes on one database, the scheduler, a flow run's state)
# is ours to fix.
HARMLESS_LOCKS = ("INSERT INTO worker ",)


def unexpected_sqlite_locks(log: str) -> list[str]:
    """The statements in `log` that sqlite refused with "database is locked", less the harmless ones; a lock
    reported without its statement counts too."""
    locked = log.count("(sqlite3.OperationalError) database is locked")
    statements = re.findall(r"\(sqlite3\.OperationalError\) database is locked\n\[SQL: ([^\n]*)", log)
    unexplained = ["(no statement)"] * (locked - len(statements))
    return unexplained + [s for s in statements if not s.startswith(HARMLESS_LOCKS)]


def test_only_a_workers_heartbeat_may_be_locked_out():
    error = "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n[SQL: {}]\n"
    heartbeat = error.format("INSERT INTO worker (work_pool_id, name) VALUES (:a, :b)")
    telemetry = error.format("UPDATE configuration SET value=:value")
    assert unexpected_sqlite_locks("started\n" + heartbeat * 2) == []
    assert unexpected_sqlite_locks(heartbeat + telemetry) == ["UPDATE configuration SET value=:value]"]
    assert unexpected_sqlite_locks("(sqlite3.OperationalError) database is locked\n") == ["(no statement)"]


def test_terminate_stops_a_process_group_and_its_children():
    shell = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(family := processes.family(shell.pid)) < 3:
        assert time.monotonic() < deadline, family
        time.sleep(0.05)
    processes.terminate(shell.pid, family[shell.pid], grace=10)
    shell.wait(timeout=10)
    assert not [pid for pid, start in family.items() if processes.alive(pid, start)]


def test_terminate_spares_a_process_that_reused_the_pid():
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        start = processes.family(other.pid)[other.pid]
        processes.terminate(other.pid, start - 1, grace=1)  # the recorded process started at another time
        assert processes.alive(other.pid, start)
    finally:
        other.kill()
        other.wait(timeout=10)


def test_serve_refuses_a_port_another_program_holds(tmp_path, monkeypatch, capsys):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        monkeypatch.setenv("PREFECT_PORT", str(squatter.getsockname()[1]))
        monkeypatch.setenv("SERVE_DIR", str(tmp_path / "serve"))
        assert servers.main(["serve"]) == 1
    assert "is taken by another program: move prefect-server with PREFECT_PORT=..." in capsys.readouterr().err
    assert not list((tmp_path / "serve").glob("*.pid"))  # nothing started, nothing to stop
    assert servers.main(["stop"]) == 0 and servers.main(["status"]) == 0
    assert "prefect-server  stopped" in capsys.readouterr().out
