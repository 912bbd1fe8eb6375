"""`make bench`: every registered benchmark (benchmarks/registry.py) run side by side, written to
benchmarks/results.json and benchmarks/results.md as {name: {value, unit, ratio, detail}}, each described in
results.md by its docstring. Ratios, not absolute times, are what to compare across machines (these are
shared and noisy).

    python -m benchmarks.run                      # all of them (about an hour)
    python -m benchmarks.run NAME...              # only these; the other entries are kept
    (results are written after each benchmark; one that fails is reported and the rest still run)
    python -m benchmarks.run --list               # the names and what each measures
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import traceback
from pathlib import Path

from benchmarks.registry import Benchmark, all_benchmarks, select

HERE = Path(__file__).resolve().parent


def write_results(results: dict, known: dict[str, Benchmark], folder: Path = HERE) -> None:
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| benchmark | value | unit | ratio | detail |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        detail = ", ".join(f"{k}={v}" for k, v in r["detail"].items() if not isinstance(v, dict))
        lines.append(f"| {name} | {r['value']} | {r['unit']} | {r.get('ratio', '')} | {detail} |")
    described = [f"- `{name}`: {known[name].description}" for name in results if name in known]
    (folder / "results.md").write_text("\n".join([*lines, "", "What each measures:", "", *described]) + "\n")
    print("\n".join(lines))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all); the others are kept")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and what each measures")
    args = parser.parse_args(argv)
    if args.list:
        for name, bench in all_benchmarks().items():
            print(f"{name}  ({bench.module})")
            print(
                textwrap.fill(
                    bench.description,
                    100,
                    initial_indent="    ",
                    subsequent_indent="    ",
                    break_on_hyphens=False,
                )
            )
        return
    try:
        chosen = select(args.names)
    except ValueError as exc:
        sys.exit(str(exc))
    failed = run_and_write(chosen, all_benchmarks())
    if failed:
        sys.exit(f"failed: {', '.join(failed)} (tracebacks above; their previous entries are kept)")


def run_and_write(
    chosen: dict[str, Benchmark], known: dict[str, Benchmark], folder: Path = HERE
) -> list[str]:
    """Runs `chosen` in turn, writing the results after each, so a benchmark that fails (or an interrupted
    run) loses nothing that finished; the others' entries are kept, and entries of benchmarks no longer
    registered are dropped. Returns the names that failed."""
    results_file = folder / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results = {name: r for name, r in results.items() if name in known}
    failed = []
    for name, bench in chosen.items():
        try:
            results[name] = bench.run()
        except Exception:  # the next benchmarks still run: one may need what this machine lacks
            traceback.print_exc()
            failed.append(name)
            continue
        write_results(results, known, folder)
    return failed


if __name__ == "__main__":
    main(sys.argv[1:])
