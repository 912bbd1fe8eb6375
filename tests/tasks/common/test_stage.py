"""The stage contract: keys, atomic publication under a per-key lock, manifests and their outputs, forced
rebuilds that never leave the key missing, and removal of what killed runs left behind."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.common.publish import HOST
from tasks.common.stage import (
    SUPERSEDED_GRACE_S,
    MissingOutputError,
    StageResult,
    build_stage,
    cached_output,
    read_manifest,
    remove_stale,
    stage_dir,
    stage_key,
)


def test_key_changes_with_every_ingredient():
    base = stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1")
    assert base == stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1")
    variants = {
        base,
        stage_key("tokenize", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v1"),
        stage_key("clean", {"clean": {"a": 2}}, {"synthesize": "k1"}, "v1"),
        stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k2"}, "v1"),
        stage_key("clean", {"clean": {"a": 1}}, {"synthesize": "k1"}, "v2"),
    }
    assert len(variants) == 5


def counting_work(calls: list[int], rows: int = 3, delay: float = 0.0):
    def work(out: Path) -> StageResult:
        calls.append(1)
        time.sleep(delay)
        (out / "data.jsonl").write_text("x\n" * rows)
        return StageResult({"rows_in": 10, "rows_out": rows}, {"data": "data.jsonl", "rows": rows})

    return work


def entries(workspace: Path, stage: str = "clean") -> list[str]:
    return sorted(p.name for p in (workspace / "stages" / stage).iterdir() if p.name != ".locks")


def test_build_then_cache_hit(tmp_path):
    calls: list[int] = []
    first = build_stage(tmp_path, "clean", "abc", {"synthesize": "k1"}, counting_work(calls))
    assert first.status == "executed" and (first.rows_in, first.rows_out) == (10, 3)
    assert Path(first.path) == stage_dir(tmp_path, "clean", "abc").resolve()
    manifest = read_manifest(Path(first.path))
    assert manifest["inputs"] == {"synthesize": "k1"} and manifest["rows_out"] == 3
    assert manifest["outputs"] == {"data": "data.jsonl", "rows": 3}
    assert json.loads((Path(first.path) / "report.json").read_text())["rows_in"] == 10
    second = build_stage(tmp_path, "clean", "abc", {"synthesize": "k1"}, counting_work(calls))
    assert second.status == "cached" and second.path == first.path
    assert second.file("data").read_text() == "x\n" * 3 and second.output("rows") == 3
    assert len(calls) == 1


def test_reading_a_missing_output_names_stage_and_field(tmp_path):
    out = build_stage(tmp_path, "clean", "abc", {}, counting_work([]))
    with pytest.raises(
        MissingOutputError, match=r"stage 'clean' \(key abc\) has no output 'model_dir'.*data"
    ):
        out.output("model_dir")


def test_failure_leaves_nothing_that_looks_finished(tmp_path):
    def broken(out: Path) -> StageResult:
        (out / "half.jsonl").write_text("partial\n")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_stage(tmp_path, "clean", "abc", {}, broken)
    assert cached_output(tmp_path, "clean", "abc") is None
    assert entries(tmp_path) == []  # the version folder is removed too


def test_folder_without_manifest_is_not_a_cache_hit(tmp_path):
    folder = stage_dir(tmp_path, "clean", "abc")
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    assert cached_output(tmp_path, "clean", "abc") is None


def test_invalid_cached_output_is_rebuilt(tmp_path):
    calls: list[int] = []
    build_stage(tmp_path, "clean", "abc", {}, counting_work(calls))
    again = build_stage(tmp_path, "clean", "abc", {}, counting_work(calls), is_valid=lambda out: False)
    assert again.status == "executed" and len(calls) == 2


def test_force_rebuilds_and_switches_the_key(tmp_path):
    calls: list[int] = []
    first = build_stage(tmp_path, "clean", "abc", {}, counting_work(calls, rows=3))
    forced = build_stage(tmp_path, "clean", "abc", {}, counting_work(calls, rows=5), force=True)
    assert forced.status == "executed" and forced.rows_out == 5 and len(calls) == 2
    assert cached_output(tmp_path, "clean", "abc").file("data").read_text().count("x") == 5
    # a reader that resolved the old version before the switch still reads a complete old version
    assert (Path(first.path) / "data.jsonl").read_text() == "x\n" * 3
    assert (Path(first.path) / ".superseded").is_file()


def _publish(workspace: str, rows: int, force: bool, result: multiprocessing.Queue) -> None:
    try:
        out = build_stage(
            Path(workspace), "clean", "abc", {}, counting_work([], rows, delay=0.2), force=force
        )
        result.put(("ok", out.rows_out))
    except BaseException as exc:  # report every failure to the parent
        result.put(("error", repr(exc)))


@pytest.mark.parametrize("force", [False, True])
def test_concurrent_runs_never_fail_and_readers_never_miss_the_key(tmp_path, force):
    """Four processes publish one key at once (forced: each replaces the others'); meanwhile the key is
    read continuously: it is never missing and always a complete version once first published."""
    build_stage(tmp_path, "clean", "abc", {}, counting_work([], rows=1))
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    procs = [ctx.Process(target=_publish, args=(str(tmp_path), 2 + i, force, result)) for i in range(4)]
    for p in procs:
        p.start()
    seen = set()
    while any(p.is_alive() for p in procs):
        out = cached_output(tmp_path, "clean", "abc")
        assert out is not None  # never missing, not even mid-switch
        seen.add(out.file("data").read_text().count("x"))
    for p in procs:
        p.join()
    outcomes = [result.get(timeout=10) for _ in procs]
    assert [o[0] for o in outcomes] == ["ok"] * 4, outcomes
    final = cached_output(tmp_path, "clean", "abc")
    assert final.file("data").read_text().count("x") == final.rows_out
    if not force:
        assert {o[1] for o in outcomes} == {1} and final.rows_out == 1  # the first publication stands


def _build_counting_calls(workspace: str, result: multiprocessing.Queue) -> None:
    def work(out: Path):
        with open(Path(workspace) / "calls", "a") as fh:
            fh.write("1")
        time.sleep(1.0)
        (out / "data.jsonl").write_text("x\n")
        return {"rows_in": 1, "rows_out": 1}, {"data": "data.jsonl"}

    result.put(build_stage(Path(workspace), "clean", "new", {}, work).status)


def test_a_concurrent_run_waits_for_the_stage_and_reuses_it(tmp_path):
    """Two runs of one config at once: the stage is computed once; the other run waits, then reuses it."""
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    procs = [ctx.Process(target=_build_counting_calls, args=(str(tmp_path), result)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert sorted(result.get(timeout=10) for _ in procs) == ["cached", "executed"]
    assert (tmp_path / "calls").read_text() == "1"


def test_unfinished_plain_folder_is_replaced(tmp_path):
    folder = stage_dir(tmp_path, "clean", "abc")
    folder.mkdir(parents=True)
    (folder / "half.jsonl").write_text("partial\n")  # a crashed writer from before versioned publication
    out = build_stage(tmp_path, "clean", "abc", {}, counting_work([], rows=2))
    assert out.status == "executed" and not (Path(out.path) / "half.jsonl").exists()


def test_remove_stale_after_kill(tmp_path):
    """A writer killed with SIGKILL mid-work leaves its version folder; the next run removes it, and keeps
    the published output, a live writer's folder and a superseded version still within its grace."""
    build_stage(tmp_path, "clean", "abc", {}, counting_work([], rows=1))
    build_stage(tmp_path, "clean", "abc", {}, counting_work([], rows=2), force=True)  # supersedes rows=1
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom tasks.common.stage import build_stage\n"
        "def work(out):\n    (out / 'started').write_text('1')\n    time.sleep(60)\n"
        "build_stage(Path(sys.argv[1]), 'clean', 'def', {}, work)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    deadline = time.time() + 60
    while not list((tmp_path / "stages" / "clean").glob(".v-def-*/started")) and time.time() < deadline:
        time.sleep(0.1)
    assert remove_stale(tmp_path) == []  # the writer is alive: its folder stays
    victim.kill()
    victim.wait()
    removed = remove_stale(tmp_path)
    assert [Path(p).name.split("-")[1] for p in removed] == ["def"]
    assert cached_output(tmp_path, "clean", "abc").rows_out == 2
    assert len([e for e in entries(tmp_path) if e.startswith(".v-abc-")]) == 2  # current + superseded
    later = remove_stale(tmp_path, now=time.time() + SUPERSEDED_GRACE_S + 1)
    assert len(later) == 1 and entries(tmp_path) == sorted(
        ["abc", Path(cached_output(tmp_path, "clean", "abc").path).name]
    )


def test_remove_stale_keeps_other_hosts_folders(tmp_path):
    parent = tmp_path / "stages" / "clean"
    other = parent / ".v-abc-otherhost-1-deadbeef"
    other.mkdir(parents=True)
    assert remove_stale(tmp_path) == [] and other.is_dir()  # its writer may be alive on that host
    mine_dead = parent / f".v-abc-{HOST}-999999999-deadbeef"
    mine_dead.mkdir()
    assert remove_stale(tmp_path) == [str(mine_dead)]
