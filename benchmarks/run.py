"""`make bench`: measurements taken side by side in one run, written to benchmarks/results.json and
benchmarks/results.md as {name: {value, unit, ratio, detail}}. Ratios, not absolute times, are what to
compare across machines (these are shared and noisy).

pipeline_rerun: a cold `finetune run` (fresh workspace, MLflow store and Prefect home) against an unchanged
warm re-run, each a separate `finetune` process as a user would start it. Profile: $BENCH_CONFIG
(default pipeline_config/offline.yaml, the `make run` profile; tiny.yaml takes a minute).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def timed_run(config: str, env: dict) -> tuple[float, dict]:
    finetune = Path(sys.executable).parent / "finetune"
    start = time.perf_counter()
    proc = subprocess.run(
        [str(finetune), "run", "--config", config, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"finetune run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return seconds, json.loads(proc.stdout[proc.stdout.index("{\n") :])


def pipeline_rerun(config: str) -> dict:
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
    cold_s, cold = timed_run(config, env)
    warm_s, warm = timed_run(config, env)
    statuses = {s["status"] for s in warm["stages"].values()}
    return {
        "value": round(warm_s, 2),
        "unit": "s",
        "ratio": round(cold_s / warm_s, 2),
        "detail": {
            "config": config,
            "cold_s": round(cold_s, 2),
            "warm_s": round(warm_s, 2),
            "warm_statuses": sorted(statuses),
            "cold_stage_seconds": {n: s["seconds"] for n, s in cold["stages"].items()},
            "ratio_means": "cold / warm wall time (higher is better)",
        },
    }


def write_results(results: dict) -> None:
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| benchmark | value | unit | ratio | detail |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        detail = ", ".join(f"{k}={v}" for k, v in r["detail"].items() if not isinstance(v, dict))
        lines.append(f"| {name} | {r['value']} | {r['unit']} | {r.get('ratio', '')} | {detail} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    config = os.environ.get("BENCH_CONFIG", "pipeline_config/offline.yaml")
    write_results({"pipeline_rerun": pipeline_rerun(config)})


if __name__ == "__main__":
    main()
