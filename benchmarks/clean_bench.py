"""The clean stage at scale, on a planted set (benchmarks/planted_clean.py) whose problems are known.

Run alone: `python -m benchmarks.run minhash_dedup_100k`.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import partial
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import in_fresh_process, time_runs

# The clean stage in a fresh process: its wall time and the peak RSS of the stage's own process and of its
# largest worker (RUSAGE_CHILDREN: the largest descendant).
_CLEAN_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipeline_config.schema import CleanConfig
from tasks.clean.pipeline import clean_pairs
start = time.perf_counter()
report = clean_pairs(Path(sys.argv[1]), Path(sys.argv[2]), CleanConfig())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "report": report,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


@benchmark("minhash_dedup_100k")
def minhash_dedup_100k(records: int = 100_000, repeats: int = 3) -> dict:
    """100,000 planted records (benchmarks/planted_clean.py: 5% near duplicates at Jaccard 0.75-0.95, 2%
    renamed copies, 1% exact copies, 164 HumanEval leaks) through the whole clean stage with its defaults
    (all filters, PII, decontamination against HumanEval, structural and MinHash dedup, one worker per
    core) in a fresh process, 3 times. value: median stage seconds (goal <= 60 on 2 cores); peak RSS beside
    it (goal < 2 GB) and the recall on the planted near duplicates."""
    from benchmarks.planted_clean import outcome, planted_set
    from tasks.common.io import write_jsonl

    distinct = round(records / 1.0816)  # the planted rows bring the total to `records`
    rows = planted_set(distinct, distinct // 20, distinct // 50, 164, distinct // 100, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "in.jsonl", rows)
        # no warm-up: each run is a new process, as a stage run is
        clean = partial(in_fresh_process, _CLEAN_CHILD, f"{tmp}/in.jsonl", tmp)
        runs = time_runs({"clean": clean}, repeats=repeats, warmup=0)["clean"]
        rejected = {r["id"]: r["reason"] for r in map(json.loads, open(f"{tmp}/rejected.jsonl"))}
    ended = outcome(rows, rejected)
    near = ended["near"]
    return {
        "value": round(runs.median, 1),
        "unit": "s",
        "detail": {
            "records": len(rows),
            "runs_s": [round(s, 1) for s in runs.seconds],
            "peak_rss_mb": round(max(r["rss_mb"] for r in runs.results)),
            "peak_worker_rss_mb": round(max(r["worker_rss_mb"] for r in runs.results)),
            "near_dup_recall": round(near["near_duplicate"] / sum(near.values()), 4),
            "distinct_removed": round(1 - ended["distinct"]["kept"] / sum(ended["distinct"].values()), 4),
            "renamed_removed": ended["renamed"]["structural_duplicate"] / sum(ended["renamed"].values()),
            "leaks_removed": 1 - ended["leak"]["kept"] / sum(ended["leak"].values()),
            "dropped": {k: v for k, v in runs.result["report"]["dropped"].items() if v},
            "cpus": os.cpu_count(),
        },
    }
