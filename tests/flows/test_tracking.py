"""MLflow bookkeeping of a pipeline run (flows/tracking.py): runs killed with their process are closed by the
next run."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

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


def test_two_runs_with_one_name_get_different_names():
    """The runner names a run `<profile> <date> <HH:MM> <key8>`: a second run of that name (the same config
    within the minute) gets its time to the second and the start of its id; the first keeps its name."""
    c = tracking.client()
    now = datetime.now(UTC)
    name = f"tiny {now:%Y-%m-%d %H:%M} abcdef12"
    first = tracking.start_run({"x": 1}, run_name=name, tags={})
    second = tracking.start_run({"x": 1}, run_name=name, tags={})
    quoted = tracking.start_run({"x": 1}, run_name="it's", tags={})
    quoted_again = tracking.start_run({"x": 1}, run_name="it's", tags={})
    names = [c.get_run(r).info.run_name for r in (first, second, quoted, quoted_again)]
    for run in (first, second, quoted, quoted_again):
        tracking.end_run(run)
    assert names[0] == name
    started = datetime.fromtimestamp(c.get_run(second).info.start_time / 1000, UTC)
    assert names[1] != name and f"{started:%H:%M:%S}" in names[1] and names[1].endswith(f"({second[:6]})")
    assert names[1].startswith(f"tiny {now:%Y-%m-%d} ") and "abcdef12" in names[1]
    assert names[2] == "it's" and names[3] != "it's" and names[3].endswith(f"({quoted_again[:6]})")
