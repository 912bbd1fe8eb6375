"""clean_pairs on a small inline set of pairs: exact counts per reason, rejected rows, config toggles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_config.schema import CleanConfig
from tasks.clean.filters import clean_pairs, output_code

REASONS = (
    "instruction_too_short",
    "instruction_too_long",
    "output_too_short",
    "output_too_long",
    "code_does_not_parse",
    "duplicate",
)

ADD = "def add(a, b):\n    return a + b"
BAD = "def broken(:\n    return 1"


def pair(id_: str, instruction: str, output: str, source: str = "docstring", input_: str = "") -> dict:
    return {
        "id": id_,
        "instruction": instruction,
        "input": input_,
        "output": output,
        "source": source,
        "metadata": {"n": id_},
    }


ROWS = [
    pair("ok", "Write a function that adds.", ADD),
    pair("short_instr", "Add", ADD),
    pair("long_instr", "x" * 61, ADD),
    pair("short_out", "Write a function that adds.", "x = 1"),
    pair("long_out", "Write a function that adds.", "x = 1\n" * 20),
    pair("bad_code", "Write a broken function.", BAD),
    pair(
        "fenced_ok",
        "Return one from a function.",
        "Here you go:\n```python\ndef f():\n    return 1\n```",
        source="self_instruct",
    ),
    pair(
        "fenced_bad",
        "Return one from a function.",
        "```python\ndef f(:\n    pass\n```\nDone",
        source="self_instruct",
    ),
    # the first row again up to whitespace: a duplicate
    pair("dup", "Write  a function\tthat adds.", "def add(a, b):\n    return a +  b"),
    # case is kept by the normalisation, so this is a different row
    pair("case", "write a function that adds.", ADD),
    # an exact copy of a rejected row is rejected for the same reason, not as a duplicate
    pair("bad_code_again", "Write a broken function.", BAD),
    # rejected for length only because of its whitespace; its collapsed twin below must still be kept
    pair("padded", "Add  two   numbers" + " " * 60, "def add2(a, b):\n    return a + b"),
    pair("twin", "Add two numbers", "def add2(a, b):\n    return a + b"),
]

BOUNDS = {
    "min_instruction_chars": 10,
    "max_instruction_chars": 60,
    "min_output_chars": 10,
    "max_output_chars": 80,
}


def run_clean(tmp_path: Path, rows: list[dict] = ROWS, **overrides) -> tuple[dict, list[dict], list[dict]]:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir(exist_ok=True)
    out_dir.mkdir(exist_ok=True)
    (in_dir / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = clean_pairs(in_dir / "pairs.jsonl", out_dir, CleanConfig(**{**BOUNDS, **overrides}))

    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (out_dir / name).read_text().splitlines()]

    return report, read("pairs.jsonl"), read("rejected.jsonl")


def test_counts_per_reason(tmp_path: Path) -> None:
    report, kept, rejected = run_clean(tmp_path)
    assert report == {
        "rows_in": 13,
        "rows_out": 4,
        "dropped": {
            "instruction_too_short": 1,
            "instruction_too_long": 2,
            "output_too_short": 1,
            "output_too_long": 1,
            "code_does_not_parse": 3,
            "duplicate": 1,
        },
        "kept_by_source": {"docstring": 3, "self_instruct": 1},
    }
    assert [r["id"] for r in kept] == ["ok", "fenced_ok", "case", "twin"]
    assert len(rejected) == 9


def test_rejected_rows_carry_their_reason(tmp_path: Path) -> None:
    _, _, rejected = run_clean(tmp_path)
    assert {r["id"]: r["reason"] for r in rejected} == {
        "short_instr": "instruction_too_short",
        "long_instr": "instruction_too_long",
        "short_out": "output_too_short",
        "long_out": "output_too_long",
        "bad_code": "code_does_not_parse",
        "fenced_bad": "code_does_not_parse",
        "dup": "duplicate",
        "bad_code_again": "code_does_not_parse",
        "padded": "instruction_too_long",
    }
    by_id = {r["id"]: r for r in ROWS}
    for r in rejected:  # the input row unchanged, plus its reason
        assert {k: v for k, v in r.items() if k != "reason"} == by_id[r["id"]]


def test_first_duplicate_is_kept_unchanged(tmp_path: Path) -> None:
    _, kept, rejected = run_clean(tmp_path)
    assert kept[0] == ROWS[0]
    assert [r["id"] for r in rejected if r["reason"] == "duplicate"] == ["dup"]


def test_without_parse_check(tmp_path: Path) -> None:
    report, kept, _ = run_clean(tmp_path, require_parse=False)
    assert report["rows_out"] == 6
    assert "code_does_not_parse" not in report["dropped"]  # a disabled filter reports nothing
    # with the parse check gone, the copy of bad_code now reaches dedup
    assert report["dropped"]["duplicate"] == 2
    assert [r["id"] for r in kept] == ["ok", "bad_code", "fenced_ok", "fenced_bad", "case", "twin"]


def test_without_dedup(tmp_path: Path) -> None:
    report, kept, _ = run_clean(tmp_path, exact_dedup=False)
    assert report["rows_out"] == 5
    assert "duplicate" not in report["dropped"]
    assert report["dropped"]["code_does_not_parse"] == 3
    assert "dup" in [r["id"] for r in kept]


def test_both_off_keeps_every_row_within_bounds(tmp_path: Path) -> None:
    report, _, _ = run_clean(tmp_path, require_parse=False, exact_dedup=False)
    assert report["rows_out"] == 8
    # only the enabled filters' reasons are reported
    assert set(report["dropped"]) == set(REASONS) - {"code_does_not_parse", "duplicate"}


def test_bounds_are_inclusive(tmp_path: Path) -> None:
    rows = [pair("lo", "x" * 10, "y = 1" + " " * 5), pair("hi", "x" * 60, "y = 1" + " " * 75)]
    report, kept, _ = run_clean(tmp_path, rows)
    assert report["rows_out"] == 2 and len(kept) == 2


def test_empty_input_reports_every_reason(tmp_path: Path) -> None:
    report, kept, rejected = run_clean(tmp_path, [])
    assert report == {"rows_in": 0, "rows_out": 0, "dropped": dict.fromkeys(REASONS, 0), "kept_by_source": {}}
    assert kept == rejected == []


@pytest.mark.parametrize(
    ("output", "code"),
    [
        ("x = 1", "x = 1"),
        ("Use this:\n```python\nx = 1\n```\nand that is it.", "x = 1\n"),
        ("```\ny = 2\n```\n```python\nz(\n```", "y = 2\n"),  # the first block
    ],
)
def test_output_code(output: str, code: str) -> None:
    assert output_code(output) == code
