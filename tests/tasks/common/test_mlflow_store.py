"""The MLflow store (tasks/common/mlflow_store.py): a tracking server decides its own artifact location; a new
sqlite store is created by one process at a time."""

from __future__ import annotations

from tasks.common import mlflow_store


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
    mlflow_store.experiment_id(server, "x")
    assert server.created == [("x", None)]  # a client path would be wrong on every other machine
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/store/mlflow.db")
    local = RecordingClient()
    mlflow_store.experiment_id(local, "x")
    assert local.created == [("x", f"{mlflow_store.artifact_root()}/x")]


def test_a_new_sqlite_store_is_opened_by_one_process_at_a_time(tmp_path, monkeypatch):
    """Two runs started at once on a new store would both create its tables, and one would fail ('table
    _alembic_tmp_experiments already exists'): opening waits for the other process's lock."""
    import fcntl
    import sqlite3
    import threading

    import mlflow

    # keep MLflow's globals on the session's store: mlflow_store.client() would point them at this one
    monkeypatch.setattr(mlflow, "set_tracking_uri", lambda uri: None)
    monkeypatch.setattr(mlflow, "set_registry_uri", lambda uri: None)
    db = tmp_path / "new" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    db.parent.mkdir()
    with open(db.with_name("mlflow.db.lock"), "a") as held:  # as another process opening it would
        fcntl.flock(held, fcntl.LOCK_EX)
        opener = threading.Thread(target=mlflow_store.client)
        opener.start()
        opener.join(timeout=1.5)
        assert opener.is_alive() and not db.exists()
    opener.join(timeout=60)
    assert not opener.is_alive()
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"experiments", "runs", "registered_models"} <= tables
