"""`make tracking-server` (mlflow/server.sh) serves a store over HTTP, and the pipeline's tracking code
logs through it: a real server on a loopback port, stopped at the end."""

from __future__ import annotations

import pytest
import requests

from flows import tracking

pytestmark = pytest.mark.slow


def test_runs_log_through_the_tracking_server(tracking_server, monkeypatch, tmp_path):
    url, store = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    run_id = tracking.start_run({"train": {"lora": {"r": 4}}}, "through-the-server", {"profile": "tiny"})
    folder = tmp_path / "stage"
    folder.mkdir()
    (folder / "report.json").write_text('{"rows_in": 3}')
    tracking.log_stage(run_id, "clean", "key-1", "executed", {"rows_in": 3, "kept": 2}, folder)
    tracking.end_run(run_id)
    found = requests.post(
        f"{url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [tracking.experiment_id(tracking.client())]},
        timeout=10,
    ).json()["runs"]
    run = next(r for r in found if r["info"]["run_id"] == run_id)
    assert {"key": "stages/clean/kept", "value": 2.0} in [
        {"key": m["key"], "value": m["value"]} for m in run["data"]["metrics"]
    ]
    assert {"key": "train.lora.r", "value": "4"} in run["data"]["params"]
    assert (store / "mlflow.db").is_file()  # the server's own store, not the repo's
    assert list(store.glob("artifacts/**/report.json"))  # artifacts land in the server's artifact root
