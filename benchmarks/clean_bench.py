"""The clean stage on planted sets (benchmarks/planted_clean.py) whose problems are known: what it removes
and what it wrongly removes (`planted_clean`), and its time and memory at 100k rows (`minhash_dedup_100k`).

Run alone: `python -m benchmarks.run planted_clean minhash_dedup_100k`.
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


DEDUP = ("duplicate", "conflicting_output", "structural_duplicate", "near_duplicate")
CONTAMINATED = ("contaminated_substring", "contaminated_ngram")
CAUGHT_BY = {"near": DEDUP, "exact": DEDUP, "renamed": DEDUP, "leak": CONTAMINATED}
CAUGHT_BY["held_out_leak"] = CONTAMINATED
GOALS = {"near": 0.99, "exact": 1.0, "renamed": 1.0, "leak": 1.0, "held_out_leak": 1.0}
MAX_FALSE_DROPS = 0.01


def scores(ended: dict) -> dict:
    """Recall per planted kind (removed by the rules meant for it), false drops per reason of the distinct
    rows, and whether each meets its goal."""
    recall = {
        kind: round(sum(ended[kind][r] for r in reasons) / sum(ended[kind].values()), 4)
        for kind, reasons in CAUGHT_BY.items()
        if kind in ended
    }
    distinct = ended["distinct"]
    total = sum(distinct.values())
    false_drops = {reason: n for reason, n in sorted(distinct.items()) if reason != "kept"}
    rate = round(1 - distinct["kept"] / total, 4)
    met = all(recall[k] >= GOALS[k] for k in recall) and rate <= MAX_FALSE_DROPS
    return {"recall": recall, "false_drops": false_drops, "false_drop_rate": rate, "goals_met": met}


@benchmark("planted_clean")
def planted_clean(distinct: int = 2000, seed: int = 0) -> dict:
    """2,000 distinct Python coding tasks composed as real instruction data is (shared phrasings and idioms:
    most share a word 13-gram with another, one in 12 the code of another up to names, each under word
    5-gram Jaccard 0.5 to every other), with 300 near duplicates (Jaccard 0.75-0.95), 50 renamed copies,
    100 exact copies, 40 HumanEval leaks and 40 leaks of held-out rows, through the clean stage with its
    defaults (CleanConfig(), SplitConfig(), seed 0). value: the share of distinct rows dropped (goal <= 0.01;
    per reason in the detail); recall per planted kind beside it (goals: near >= 0.99, the others 1.0) and
    the distinct rows' measured similarity."""
    from benchmarks.planted_clean import outcome, planted_set, similarity
    from pipeline_config.schema import CleanConfig
    from tasks.clean.pipeline import clean_pairs
    from tasks.common.io import write_jsonl

    rows = planted_set(distinct, 300, 50, 40, 100, seed=seed, held_out_leaks=40)
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "in.jsonl", rows)
        report = clean_pairs(Path(tmp) / "in.jsonl", Path(tmp), CleanConfig(), workers=1)
        rejected = {r["id"]: r["reason"] for r in map(json.loads, open(f"{tmp}/rejected.jsonl"))}
    score = scores(outcome(rows, rejected))
    return {
        "value": score["false_drop_rate"],
        "unit": "share of distinct rows dropped",
        "detail": {
            "rows": len(rows),
            **score,
            "dropped": {k: v for k, v in report["dropped"].items() if v},
            "similarity": similarity(rows),
        },
    }


@benchmark("minhash_dedup_100k")
def minhash_dedup_100k(records: int = 100_000, repeats: int = 3) -> dict:
    """100,000 planted records (benchmarks/planted_clean.py, the realistic tasks of `planted_clean`: 5% near
    duplicates at Jaccard 0.75-0.95, 2% renamed copies, 1% exact copies, 164 HumanEval leaks, 100 leaks of
    held-out rows) through the whole clean stage with its defaults
    (all filters, PII, decontamination against HumanEval, structural and MinHash dedup, one worker per
    core) in a fresh process, 3 times. value: median stage seconds (goal <= 60 on 2 cores); peak RSS beside
    it (goal < 2 GB), recall per planted kind and false drops per reason."""
    from benchmarks.planted_clean import outcome, planted_set
    from tasks.common.io import write_jsonl

    distinct = round(records / 1.0816)  # the planted rows bring the total to `records`
    rows = planted_set(
        distinct, distinct // 20, distinct // 50, 164, distinct // 100, seed=0, held_out_leaks=100
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "in.jsonl", rows)
        # no warm-up: each run is a new process, as a stage run is
        clean = partial(in_fresh_process, _CLEAN_CHILD, f"{tmp}/in.jsonl", tmp)
        runs = time_runs({"clean": clean}, repeats=repeats, warmup=0)["clean"]
        rejected = {r["id"]: r["reason"] for r in map(json.loads, open(f"{tmp}/rejected.jsonl"))}
    score = scores(outcome(rows, rejected))
    return {
        "value": round(runs.median, 1),
        "unit": "s",
        "detail": {
            "records": len(rows),
            "runs_s": [round(s, 1) for s in runs.seconds],
            "peak_rss_mb": round(max(r["rss_mb"] for r in runs.results)),
            "peak_worker_rss_mb": round(max(r["worker_rss_mb"] for r in runs.results)),
            **score,
            "dropped": {k: v for k, v in runs.result["report"]["dropped"].items() if v},
            "cpus": os.cpu_count(),
        },
    }
