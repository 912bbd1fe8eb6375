"""The whole pipeline as a user starts it: `finetune run` processes, timed from outside.

Run alone: `python -m benchmarks.run pipeline_rerun` (BENCH_CONFIG picks the profile).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs

WORK = Path(__file__).resolve().parent / "work"


def finetune_run(config: str, env: dict) -> dict:
    """One `finetune run --json` process; its JSON summary (stages with status, seconds and path)."""
    finetune = Path(sys.executable).parent / "finetune"
    proc = subprocess.run(
        [str(finetune), "run", "--config", config, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        sys.exit(f"finetune run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{\n") :])


@benchmark("pipeline_rerun")
def pipeline_rerun(config: str | None = None) -> dict:
    """A cold `finetune run` (fresh workspace, MLflow store and Prefect home) against an unchanged warm
    re-run, each a separate `finetune` process as a user would start it. Profile: $BENCH_CONFIG (default
    pipeline_config/quick.yaml, ~5 minutes; offline.yaml, the `make run` profile, takes ~30 minutes for the
    pair; tiny.yaml a minute). value: warm seconds; ratio = cold / warm wall time."""
    config = config or os.environ.get("BENCH_CONFIG", "pipeline_config/quick.yaml")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = {
        **os.environ,
        "FINETUNE_WORKSPACE": str(WORK / "workspace"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (WORK / "artifacts").as_uri(),
        "PREFECT_HOME": str(WORK / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # once each, cold first: the warm run is the cold run's cache hit
    runs = time_runs(
        {"cold": lambda: finetune_run(config, env), "warm": lambda: finetune_run(config, env)},
        repeats=1,
        warmup=0,
    )
    cold_s, warm_s = runs["cold"].median, runs["warm"].median
    statuses = {s["status"] for s in runs["warm"].result["stages"].values()}
    return {
        "value": round(warm_s, 2),
        "unit": "s",
        "ratio": round(cold_s / warm_s, 2),
        "detail": {
            "config": config,
            "cold_s": round(cold_s, 2),
            "warm_s": round(warm_s, 2),
            "warm_statuses": sorted(statuses),
            "cold_stage_seconds": {n: s["seconds"] for n, s in runs["cold"].result["stages"].items()},
            "ratio_means": "cold / warm wall time (higher is better)",
        },
    }
