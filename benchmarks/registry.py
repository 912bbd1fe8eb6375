"""Every benchmark `make bench` runs, registered once where it is written:

    @benchmark("teacher_concurrency")
    def teacher_concurrency(prompts: int = 32) -> dict:
        \"\"\"requests/s of the OpenAI teacher ... (the description `--list` and results.md show)\"\"\"

A benchmark is a function callable without arguments (its defaults are the measured sizes) returning
{value, unit, ratio?, detail}; its docstring is its description. MODULES lists the modules that hold them,
in the order `make bench` runs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

MODULES = (
    "benchmarks.pipeline_bench",
    "benchmarks.model_bench",
    "benchmarks.sandbox_bench",
    "benchmarks.scrape_bench",
    "benchmarks.clean_bench",
    "benchmarks.teacher_bench",
    "benchmarks.novelty_bench",
    "benchmarks.packing_bench",
    "benchmarks.train_bench",
    "benchmarks.precision_bench",
    "benchmarks.eval_power",
)


@dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[[], dict]
    module: str

    @property
    def description(self) -> str:
        """The docstring as one paragraph (its line breaks are only the source's wrapping)."""
        return " ".join(inspect.cleandoc(self.run.__doc__ or "").split())


BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register the decorated function as the benchmark `name`; its docstring describes it."""

    def register(fn: Callable[..., dict]) -> Callable[..., dict]:
        if not (fn.__doc__ or "").strip():
            raise ValueError(f"benchmark {name!r} ({fn.__module__}.{fn.__qualname__}) needs a docstring")
        if name in BENCHMARKS and BENCHMARKS[name].run is not fn:
            raise ValueError(
                f"benchmark {name!r} registered twice: {BENCHMARKS[name].module}, {fn.__module__}"
            )
        BENCHMARKS[name] = Benchmark(name, fn, fn.__module__)
        return fn

    return register


def all_benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark, in MODULES order (importing a module registers its benchmarks)."""
    for module in MODULES:
        import_module(module)
    ordered = sorted(BENCHMARKS.values(), key=lambda b: MODULES.index(b.module))  # stable: source order
    return {b.name: b for b in ordered}


def select(names: list[str]) -> dict[str, Benchmark]:
    """The named benchmarks (all when none is named); an unknown name raises ValueError,
    listing the known ones."""
    known = all_benchmarks()
    if unknown := [n for n in names if n not in known]:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return {n: b for n, b in known.items() if not names or n in names}
