"""The one way benchmarks time things: warm-up runs excluded, repeats interleaved, the median kept.

    runs = time_runs({"batched": lambda: generate(8), "single": lambda: generate(1)}, repeats=3)
    runs["batched"].median, runs["batched"].result  # seconds; what the last timed call returned

Contenders run in turn within each repeat (this machine is shared and its load changes within seconds, so
back-to-back runs of one side would measure the neighbours more than the code); `alternate=True` reverses
the order on odd repeats, so neither side of an A/B pair always goes first. A contender that times itself,
such as work in a fresh process that leaves out the interpreter's start-up (`in_fresh_process`), returns a
`Timed`, whose seconds are taken instead of the wall time of the call.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Clock = Callable[[], float]


@dataclass(frozen=True)
class Timed:
    """One timed call: its seconds and what it returned."""

    seconds: float
    result: Any = None


@dataclass
class Runs:
    """The timed calls of one contender, warm-up excluded."""

    seconds: list[float] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def result(self) -> Any:
        return self.results[-1]


def timed(fn: Callable[[], Any], clock: Clock = time.perf_counter) -> Timed:
    """Call `fn` once; a `Timed` it returns is its own measurement."""
    start = clock()
    result = fn()
    seconds = clock() - start
    return result if isinstance(result, Timed) else Timed(seconds, result)


def time_runs(
    contenders: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    warmup: int = 1,
    alternate: bool = False,
    clock: Clock = time.perf_counter,
) -> dict[str, Runs]:
    """`warmup` untimed calls of each contender (imports, first connections, page cache), then `repeats`
    rounds in which each runs once, in the given order (reversed on odd rounds when `alternate`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats})")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    runs = {name: Runs() for name in names}
    for repeat in range(repeats):
        for name in reversed(names) if alternate and repeat % 2 else names:
            one = timed(contenders[name], clock)
            runs[name].seconds.append(one.seconds)
            runs[name].results.append(one.result)
    return runs


def in_fresh_process(script: str, *args: str) -> Timed:
    """Run `script` in a new interpreter from the repository root, as a new `finetune` process would start
    with nothing memoised; its last stdout line is JSON holding "seconds" (what it timed itself) and the
    rest of its result."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Timed(out.pop("seconds"), out)
