"""The stage contract: keys, atomic publication, manifests written last, forced rebuilds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.stage import build_stage, cached_output, read_manifest, stage_dir, stage_key


def test_key_changes_with_every_ingredient():
    base = stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1")
    assert base == stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1")
    assert (
        len(
            {
                base,
                stage_key("tokenize", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1"),
                stage_key("clean", {"clean": {"a": 2}}, {"synthesize": "k1"}, "v1"),
                stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k2"}, "v1"),
                stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v2"),
            }
        )
        == 5
    )


def counting_work(calls: list[int], rows: int = 3):
    def work(out: Path) -> dict:
        calls.append(1)
        (out / "data.jsonl").write_text("x\n" * rows)
        return {"rows_in": 10, "rows_out": rows}

    return work


def test_build_then_cache_hit(tmp_path):
    calls: list[int] = []
    first = build_stage(tmp_path, "clean", "abc", {"synthesize": "k1"}, counting_work(calls))
    assert first.status == "executed" and (first.rows_in, first.rows_out) == (10, 3)
    assert Path(first.path) == stage_dir(tmp_path, "clean", "abc")
    manifest = read_manifest(Path(first.path))
    assert manifest["inputs"] == {"synthesize": "k1"} and manifest["rows_out"] == 3
    assert json.loads((Path(first.path) / "report.json").read_text())["rows_in"] == 10
    second = build_stage(tmp_path, "clean", "abc", {"synthesize": "k1"}, counting_work(calls))
    assert second.status == "cached" and second.path == first.path
    assert len(calls) == 1


def test_failure_leaves_nothing_that_looks_finished(tmp_path):
    def broken(out: Path) -> dict:
        (out / "half.jsonl").write_text("partial\n")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_stage(tmp_path, "clean", "abc", {}, broken)
    assert cached_output(tmp_path, "clean", "abc") is None
    assert list((tmp_path / "stages" / "clean").iterdir()) == []  # temp folder removed too


def test_folder_without_manifest_is_not_a_cache_hit(tmp_path):
    folder = stage_dir(tmp_path, "clean", "abc")
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    assert cached_output(tmp_path, "clean", "abc") is None


def test_force_rebuilds_in_place(tmp_path):
    calls: list[int] = []
    build_stage(tmp_path, "clean", "abc", {}, counting_work(calls, rows=3))
    forced = build_stage(tmp_path, "clean", "abc", {}, counting_work(calls, rows=5), force=True)
    assert forced.status == "executed" and forced.rows_out == 5 and len(calls) == 2
    assert (Path(forced.path) / "data.jsonl").read_text().count("x") == 5
    assert sorted(p.name for p in (tmp_path / "stages" / "clean").iterdir()) == ["abc"]


def test_concurrent_builder_that_publishes_first_wins(tmp_path):
    """Two runs of one stage: the one that finishes second keeps the first one's folder, not an error."""
    calls: list[int] = []

    def slow_work(out: Path) -> dict:
        # while this run works, another process publishes the same key
        build_stage(tmp_path, "clean", "abc", {}, counting_work(calls, rows=3))
        (out / "data.jsonl").write_text("y\n")
        return {"rows_in": 1, "rows_out": 1}

    result = build_stage(tmp_path, "clean", "abc", {}, slow_work)
    assert result.status == "cached" and result.rows_out == 3
    assert (Path(result.path) / "data.jsonl").read_text() == "x\n" * 3
    assert sorted(p.name for p in (tmp_path / "stages" / "clean").iterdir()) == ["abc"]


def test_unfinished_folder_is_replaced(tmp_path):
    folder = stage_dir(tmp_path, "clean", "abc")
    folder.mkdir(parents=True)
    (folder / "half.jsonl").write_text("partial\n")  # a crashed writer from before atomic publication
    out = build_stage(tmp_path, "clean", "abc", {}, counting_work([], rows=2))
    assert out.status == "executed" and not (Path(out.path) / "half.jsonl").exists()
