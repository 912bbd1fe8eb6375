"""Stage publication on a remote workspace (tasks/common/remote.py), on memory://: a version uploaded with
its manifest last, a pointer as the commit point, the first publication of a key standing, forced
rebuilds, copies fetched once into the local cache, and the sweep of what dead writers left."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import fsspec
import pytest

from tasks.common import io, remote
from tasks.common.publish import HOST
from tasks.common.stage import (
    SUPERSEDED_GRACE_S,
    StageResult,
    build_stage,
    cached_output,
    read_report,
    remove_stale,
)


@pytest.fixture
def ws(monkeypatch, tmp_path):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    url = f"memory://stage-{uuid.uuid4().hex[:8]}"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def work(rows: int, calls: list | None = None, then=None):
    def run(out: Path) -> StageResult:
        (calls if calls is not None else []).append(1)
        (out / "model").mkdir()
        (out / "model" / "weights.txt").write_text("w" * rows)
        (out / "data.jsonl").write_text("x\n" * rows)
        if then:
            then()
        return StageResult({"rows_in": 10, "rows_out": rows}, {"data": "data.jsonl", "model_dir": "model"})

    return run


def names(ws: str, stage: str = "clean") -> list[str]:
    return io.listdir(io.join(ws, "stages", stage))


def test_build_publishes_a_version_and_a_pointer_then_hits_the_cache(ws, tmp_path):
    calls: list[int] = []
    first = build_stage(ws, "clean", "abc", {"synthesize": "k1"}, work(3, calls))
    assert first.status == "executed" and first.path.startswith(f"{ws}/stages/clean/.v-abc-{HOST}-")
    version = first.path.rsplit("/", 1)[1]
    assert names(ws) == sorted([version, "abc.json"])
    assert io.read_json(remote.pointer(ws, "clean", "abc"))["version"] == version
    manifest = io.read_json(f"{first.path}/manifest.json")
    assert manifest["inputs"] == {"synthesize": "k1"} and manifest["rows_out"] == 3
    assert read_report(first)["rows_in"] == 10

    # the built folder became this machine's copy: nothing left in the scratch area, nothing downloaded
    cache = io.local_cache(ws)
    assert not list((cache / "build").rglob("manifest.json"))
    assert first.file("data") == cache / "stages" / "clean" / version / "data.jsonl"

    again = build_stage(ws, "clean", "abc", {}, work(5, calls))
    assert again.status == "cached" and again.path == first.path and len(calls) == 1


def test_another_machine_downloads_a_version_once(ws, tmp_path, monkeypatch):
    first = build_stage(ws, "clean", "abc", {}, work(3))
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "other-machine"))
    hit = cached_output(ws, "clean", "abc")
    small = hit.folder(top_level_only=True)  # reports only: no model folder fetched to read them
    assert sorted(p.name for p in small.iterdir()) == ["data.jsonl", "manifest.json", "report.json"]
    model = hit.file("model_dir")
    assert (model / "weights.txt").read_text() == "www" and str(model).startswith(
        str(tmp_path / "other-machine")
    )
    io.remove(f"{first.path}/data.jsonl")  # the copy is not fetched again: a version never changes
    assert hit.file("data").read_text() == "x\n" * 3
    assert hit.folder(top_level_only=True) == hit.folder()  # the whole copy serves both


def test_the_first_publication_of_a_key_stands(ws):
    """Another worker publishes the same key while this one builds it (no lock across machines): this one
    drops its upload and returns the other's output, which is equivalent by content addressing."""
    others: list = []

    def other_worker_publishes():
        others.append(build_stage(ws, "clean", "abc", {}, work(1)))

    mine = build_stage(ws, "clean", "abc", {}, work(2, then=other_worker_publishes))
    assert mine.status == "cached" and mine.path == others[0].path and mine.rows_out == 1
    assert len([n for n in names(ws) if n.startswith(".v-")]) == 1  # ours was removed


def test_force_replaces_the_pointer_and_the_old_version_goes_after_its_grace(ws):
    first = build_stage(ws, "clean", "abc", {}, work(3))
    forced = build_stage(ws, "clean", "abc", {}, work(5), force=True)
    assert forced.status == "executed" and cached_output(ws, "clean", "abc").path == forced.path
    old = first.path.rsplit("/", 1)[1]
    assert f".superseded-{old}" in names(ws)
    assert io.read_text(f"{first.path}/data.jsonl") == "x\n" * 3  # a reader of the old version still reads
    assert remove_stale(ws) == []
    assert remove_stale(ws, now=time.time() + SUPERSEDED_GRACE_S + 1) == [first.path]
    assert names(ws) == sorted(["abc.json", forced.path.rsplit("/", 1)[1]])


def test_a_failed_stage_publishes_nothing(ws):
    def broken(out: Path):
        (out / "half.jsonl").write_text("x\n")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_stage(ws, "clean", "abc", {}, broken)
    assert cached_output(ws, "clean", "abc") is None and names(ws) == []
    assert not list((io.local_cache(ws) / "build").rglob("half.jsonl"))


def test_remove_stale_takes_dead_writers_uploads_and_keeps_the_rest(ws):
    published = f"{ws}/stages/clean/.v-abc-{HOST}-999999998-feedface"  # by a process that has since ended
    io.write_text(f"{published}/manifest.json", '{"rows_in": 1, "rows_out": 1}')
    io.write_json(remote.pointer(ws, "clean", "abc"), {"version": published.rsplit("/", 1)[1]})
    dead = f"{ws}/stages/clean/.v-def-{HOST}-999999999-deadbeef"
    elsewhere = f"{ws}/stages/clean/.v-def-otherhost-1-deadbeef"
    for upload in (dead, elsewhere):
        io.write_text(f"{upload}/data.jsonl", "x\n")  # cut short: no manifest, no pointer
    leftover = io.local_cache(ws) / "build" / "clean" / f".v-ghi-{HOST}-999999999-cafecafe"
    leftover.mkdir(parents=True)
    assert sorted(remove_stale(ws)) == sorted([dead, str(leftover)])
    assert io.is_file(f"{elsewhere}/data.jsonl")  # its writer may still be uploading on that host
    assert cached_output(ws, "clean", "abc").path == published  # a pointer names it: it stays
