"""How much the default evaluation can see: the widths of its paired intervals (tasks/evaluation/paired.py).

Run alone: `python -m benchmarks.run eval_power` (seconds after a `make run`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.pipeline_bench import finetune_run
from benchmarks.registry import benchmark

CONFIG = "pipeline_config/offline.yaml"


@benchmark("eval_power")
def eval_power() -> dict:
    """Per metric of the default evaluation, the paired interval of fine-tuned - base: n, half-width and
    the smallest true difference it detects at 80% power; value: the primary metric's half-width. Runs the
    default profile (pipeline_config/offline.yaml, what `make run` runs) through the evaluate stage in the
    project's own workspace, so after a `make run` every stage is a cache hit and this takes seconds (cold:
    the whole ~15-minute run)."""
    from pipeline_config import load_config

    cfg = load_config(CONFIG)
    summary = finetune_run(CONFIG, dict(os.environ))
    report = json.loads((Path(summary["stages"]["evaluate"]["path"]) / "report.json").read_text())
    per_metric = {}
    for suite, entry in report["suites"].items():
        for metric, m in entry["metrics"].items():
            diff = m["vs"].get("base")
            if diff is None:
                continue
            per_metric[f"{suite}.{metric}"] = {
                "n": diff["n"],
                "half_width": round(diff["half_width"], 4),
                "detectable": round(diff["detectable"], 4),
                "difference": round(diff["difference"], 4),
                "undecidable": diff["undecidable"],
            }
    primary = per_metric[cfg.register.primary_metric]
    return {
        "value": primary["half_width"],
        "unit": f"{cfg.register.primary_metric} paired 95% half-width",
        "detail": {"primary": cfg.register.primary_metric, "per_metric": per_metric},
    }
