"""MLflow bookkeeping of a pipeline run (flows/tracking.py): runs killed with their process are closed by the
next run."""

from __future__ import annotations

import subprocess
import sys

from flows import tracking


def test_orphaned_mlflow_runs_are_marked_killed():
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
