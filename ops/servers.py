"""Local servers in one command: `make serve`, `make status`, `make stop`.

serve: a Prefect server (UI + API), the work pool and deployments of deployment.yaml, a process worker,
and an MLflow tracking server (mlflow/server.sh over mlflow/mlflow.db and mlflow/artifacts). Each service
starts in its own process group, its output goes to .serve/logs/<service>.log and its PID to
.serve/<service>.pid, and serve waits until it answers (Prefect /api/health, MLflow /health, the worker's
heartbeat). A service whose PID file names a live process is left alone: a second `make serve` starts nothing.
stop: SIGTERM to each recorded process group (and to any descendant that left it), SIGKILL after a grace
period, then the PID files go. Never by name: only what serve started, so a foreign server is left running.

The worker (and so every deployment run) gets PREFECT_API_URL and MLFLOW_TRACKING_URI of these servers and
Prefect's and MLflow's telemetry off. Knobs (environment or `make serve VAR=...`): PREFECT_PORT (4200),
MLFLOW_PORT (5000), SERVE_DIR (.serve: logs, PID files, the server's PREFECT_HOME), MLFLOW_STORE (mlflow/),
SERVE_TIMEOUT (seconds to wait for each service, 180).
Alone: .venv/bin/python -m ops.servers {serve,status,stop}
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.processes import StillAlive, alive, proc_stat, terminate

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
SERVICES = ("prefect-server", "mlflow-server", "worker")
# loopback only: a user's http_proxy must not see these requests
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Setup:
    state: Path
    prefect_port: int
    mlflow_port: int
    store: Path
    timeout: float

    @classmethod
    def from_env(cls) -> Setup:
        env = os.environ
        return cls(
            state=Path(env.get("SERVE_DIR") or REPO / ".serve").resolve(),
            prefect_port=int(env.get("PREFECT_PORT") or 4200),
            mlflow_port=int(env.get("MLFLOW_PORT") or 5000),
            store=Path(env.get("MLFLOW_STORE") or REPO / "mlflow").resolve(),
            timeout=float(env.get("SERVE_TIMEOUT") or 180),
        )

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    def pid_file(self, service: str) -> Path:
        return self.state / f"{service}.pid"

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.state / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "true",  # Prefect's SDK telemetry and MLflow's ("1" would not do for MLflow)
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "FINETUNE_REPO_DIR": str(REPO),  # deployment.yaml's pull step: runs start from this checkout
            "PORT": str(self.mlflow_port),  # mlflow/server.sh
            "MLFLOW_STORE": str(self.store),
            "MLFLOW_BIN": str(BIN / "mlflow"),
            # Prefect's worker keeps flow code in $TMPDIR/runner_storage/: in a shared /tmp that folder may
            # belong to whichever user served first (seen: root, then an ordinary user could not start one)
            "TMPDIR": str(self.state / "tmp"),
        }

    def commands(self, pool: str) -> dict[str, list[str]]:
        prefect = str(BIN / "prefect")
        return {
            "prefect-server": [prefect, "server", "start", "--host", HOST, "--port", str(self.prefect_port)],
            "mlflow-server": [str(REPO / "mlflow" / "server.sh")],
            "worker": [prefect, "worker", "start", "--pool", pool],
        }


def work_pool() -> str:
    import yaml

    spec = yaml.safe_load((REPO / "deployment.yaml").read_text())
    pools = sorted({d["work_pool"]["name"] for d in spec["deployments"]})
    if len(pools) != 1:
        raise ServeError(
            f"deployment.yaml names work pools {pools}; make serve starts one worker for one pool"
        )
    return pools[0]


def read_pid(setup: Setup, service: str) -> tuple[int, int | None] | None:
    path = setup.pid_file(service)
    if not path.exists():
        return None
    lines = path.read_text().split()
    return int(lines[0]), (int(lines[1]) or None) if len(lines) > 1 else None


def running(setup: Setup, service: str) -> int | None:
    record = read_pid(setup, service)
    return record[0] if record and alive(*record) else None


def start(setup: Setup, service: str, command: list[str]) -> int:
    log = setup.log(service)
    (setup.state / "tmp").mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=setup.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop signals the group, children included
        )
    stat = proc_stat(process.pid)
    setup.pid_file(service).write_text(f"{process.pid}\n{stat[3] if stat else 0}\n")
    return process.pid


# --- health ----------------------------------------------------------------------------------------------


def http(url: str, body: dict | None = None) -> tuple[int, bytes] | None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with HTTP.open(request, timeout=3) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return None


def prefect_healthy(setup: Setup) -> bool:
    answer = http(f"{setup.api_url}/health")
    return answer is not None and answer[0] == 200


def mlflow_healthy(setup: Setup) -> bool:
    answer = http(f"{setup.mlflow_url}/health")
    return answer is not None and answer[0] == 200


def last_heartbeat(setup: Setup, pool: str) -> datetime | None:
    """The newest heartbeat of a worker of `pool`, or None when none is known."""
    answer = http(f"{setup.api_url}/work_pools/{pool}/workers/filter", {})
    if answer is None or answer[0] != 200:
        return None
    beats = [w["last_heartbeat_time"] for w in json.loads(answer[1]) if w.get("last_heartbeat_time")]
    return max(datetime.fromisoformat(b) for b in beats) if beats else None


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def wait(setup: Setup, service: str, pid: int | None, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + setup.timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid is not None and not alive(pid):
            raise ServeError(f"{service} exited while starting; its log says:\n{tail(setup.log(service))}")
        time.sleep(0.5)
    raise ServeError(
        f"{service} did not answer within {setup.timeout:.0f} s (SERVE_TIMEOUT=...); its log says:"
        f"\n{tail(setup.log(service))}"
    )


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(f"  {line}" for line in text[-lines:])


# --- commands --------------------------------------------------------------------------------------------


@contextmanager
def locked(setup: Setup):
    """One serve or stop at a time per state folder: two at once would start two sets."""
    (setup.state / "logs").mkdir(parents=True, exist_ok=True)
    (setup.state / ".gitignore").write_text("*\n")  # logs, PID files and the server database stay local
    with (setup.state / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def prefect_cli(setup: Setup, *args: str) -> None:
    with setup.log("deploy").open("ab") as out:
        done = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=setup.env(), stdout=out, stderr=out
        )
    if done.returncode:
        raise ServeError(f"prefect {' '.join(args)} failed; its log says:\n{tail(setup.log('deploy'))}")


def start_servers(setup: Setup, pool: str, started: list[str]) -> None:
    checks = {
        "prefect-server": (setup.prefect_port, "PREFECT_PORT", lambda: prefect_healthy(setup)),
        "mlflow-server": (setup.mlflow_port, "MLFLOW_PORT", lambda: mlflow_healthy(setup)),
    }
    pids: dict[str, int | None] = {}
    for service, (port, knob, healthy) in checks.items():
        pids[service] = running(setup, service)
        if pids[service] is not None:
            continue
        setup.pid_file(service).unlink(missing_ok=True)  # stale: its process is gone
        if port_taken(port):
            if not healthy():
                raise ServeError(f"port {port} is taken by another program: move {service} with {knob}=...")
            print(
                f"{service}: one already answers on port {port}; using it (not started here, so make stop "
                f"leaves it running)"
            )
            continue
        pids[service] = start(setup, service, setup.commands(pool)[service])
        started.append(service)
    for service, (_, _, healthy) in checks.items():  # both start at once: the slower one sets the pace
        wait(setup, service, pids[service], healthy)


# Prefect global concurrency limits that stages hold while they use a scarce resource (flows/stage_tasks.py):
# deployments sharing this work pool queue for the one GPU and the sandbox instead of oversubscribing them.
RESOURCE_LIMITS = {"gpu": 1, "teacher": 8, "sandbox": 2}


def start_worker(setup: Setup, pool: str, started: list[str]) -> None:
    answer = http(f"{setup.api_url}/work_pools/{pool}")
    if answer is not None and answer[0] == 404:
        prefect_cli(setup, "work-pool", "create", pool, "--type", "process")
    prefect_cli(setup, "deploy", "--prefect-file", "deployment.yaml", "--all")
    for name, limit in RESOURCE_LIMITS.items():  # an existing limit (409) keeps the value a user gave it
        http(f"{setup.api_url}/v2/concurrency_limits/", {"name": name, "limit": limit})
    since = datetime.now(UTC) - timedelta(seconds=2)  # server and worker share this clock
    pid = start(setup, "worker", setup.commands(pool)["worker"])
    started.append("worker")
    wait(setup, "worker", pid, lambda: (last_heartbeat(setup, pool) or since) > since)


def serve(setup: Setup) -> int:
    pool = work_pool()
    started: list[str] = []
    with locked(setup):
        try:
            start_servers(setup, pool, started)
            if running(setup, "worker") is None:  # a worker is the last to start: none means deploy again
                setup.pid_file("worker").unlink(missing_ok=True)
                start_worker(setup, pool, started)
        except BaseException:  # a failed or interrupted serve leaves nothing half-started behind
            for service in reversed(started):
                stop_one(setup, service, quiet=True)
            raise
    print(f"started: {', '.join(started)}" if started else "already running: nothing started")
    status(setup)
    print(f"""
Prefect UI: {setup.prefect_url}    (deployments finetune/nightly and finetune/rerun-stage, pool {pool})
MLflow UI:  {setup.mlflow_url}
Point the CLI at them (prefect deployment run ..., finetune run ...):
  export PREFECT_API_URL={setup.api_url}
  export MLFLOW_TRACKING_URI={setup.mlflow_url}
Logs: {setup.state / "logs"}/    Stop: make stop""")
    return 0


def stop_one(setup: Setup, service: str, quiet: bool = False) -> None:
    record = read_pid(setup, service)
    if record is None:
        if not quiet:
            print(f"{service}: not running (no PID file)")
        return
    was_running = alive(*record)
    terminate(*record)  # also when the leader is gone: its group may live on
    setup.pid_file(service).unlink(missing_ok=True)
    if not quiet:
        print(f"{service}: {'stopped' if was_running else 'was not running'} (pid {record[0]})")


def stop(setup: Setup) -> int:
    if not setup.state.exists():
        print(f"nothing to stop: no {setup.state}")
        return 0
    with locked(setup):
        for service in reversed(SERVICES):  # the worker first: its runs end while the servers still answer
            stop_one(setup, service)
    return 0


def status(setup: Setup) -> int:
    pool = work_pool()
    where = {"prefect-server": setup.prefect_url, "mlflow-server": setup.mlflow_url, "worker": f"pool {pool}"}
    for service in SERVICES:
        pid = running(setup, service)
        if service == "worker":
            beat = last_heartbeat(setup, pool) if pid else None
            age = (datetime.now(UTC) - beat).total_seconds() if beat else None
            # Prefect calls a worker offline after a few missed heartbeats (30 s apart)
            health = (
                f"healthy (heartbeat {age:.0f} s ago)" if age is not None and age < 90 else "no heartbeat"
            )
        else:
            up = prefect_healthy(setup) if service == "prefect-server" else mlflow_healthy(setup)
            health = "healthy" if up else "not answering"
            if up and pid is None:
                health += " (not started by make serve)"
        state = f"running  pid {pid:<7}" if pid else "stopped" + " " * 11
        print(f"{service:<15} {state} {where[service]:<24} {health}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = {"serve": serve, "stop": stop, "status": status}
    if len(args) != 1 or args[0] not in commands:
        print("usage: python -m ops.servers {serve,status,stop}", file=sys.stderr)
        return 2
    try:
        return commands[args[0]](Setup.from_env())
    except (ServeError, StillAlive) as error:
        print(f"{args[0]}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
