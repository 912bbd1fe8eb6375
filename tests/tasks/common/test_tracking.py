"""MLflow bookkeeping: runs killed with their process are closed by the next run; a tracking server decides
its own artifact location."""

from __future__ import annotations

import subprocess
import sys

from flows import tracking


def test_orphaned_mlflow_runs_are_marked_killed():
    from flows import tracking

    c = tracking.client()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = c.create_run(tracking.experiment_id(c), tags={"host": tracking.HOST, "pid": str(dead.pid)})
    alive = tracking.start_run({"x": 1}, run_name="alive", tags={})  # owned by this (live) process
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    busy = c.create_run(
        tracking.experiment_id(c), tags={"host": tracking.HOST, "pid": str(other.pid), "profile": "p"}
    )
    ended, live = tracking.end_orphaned_runs()
    other.kill()
    assert run.info.run_id in ended and alive not in ended and busy.info.run_id not in ended
    assert [t["pid"] for t in live] == [str(other.pid)]  # another live run on this host: a warning
    c.set_terminated(busy.info.run_id)
    assert c.get_run(run.info.run_id).info.status == "KILLED"
    assert c.get_run(alive).info.status == "RUNNING"
    tracking.end_run(alive)


class RecordingClient:
    def __init__(self):
        self.created: list[tuple] = []

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name, artifact_location=None):
        self.created.append((name, artifact_location))
        return "1"


def test_artifact_location_is_set_only_for_a_local_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    server = RecordingClient()
    tracking.experiment_id(server, "x")
    assert server.created == [("x", None)]  # a client path would be wrong on every other machine
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/store/mlflow.db")
    local = RecordingClient()
    tracking.experiment_id(local, "x")
    assert local.created == [("x", f"{tracking.artifact_root()}/x")]


def test_a_new_sqlite_store_is_opened_by_one_process_at_a_time(tmp_path, monkeypatch):
    """Two runs started at once on a new store would both create its tables, and one would fail ('table
    _alembic_tmp_experiments already exists'): opening waits for the other process's lock."""
    import fcntl
    import sqlite3
    import threading

    import mlflow

    # keep MLflow's globals on the session's store: tracking.client() would point them at this one
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_registry_uri", lambda uri: None)
    db = tmp_path / "new" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    db.parent.mkdir()
    with open(db.with_name("mlflow.db.lock"), "a") as held:  # as another process opening it would
        fcntl.flock(held, fcntl.LOCK_EX)
        opener = threading.Thread(target=tracking.client)
        opener.start()
        opener.join(timeout=1.5)
        assert opener.is_alive() and not db.exists()
    opener.join(timeout=60)
    assert not opener.is_alive()
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "registered_models"} <= tables
