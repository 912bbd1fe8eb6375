"""The data stages' executor seam (tasks/common/parallel.py): the config's `executor` section is in no
stage key, and on a Dask LocalCluster of 2 worker processes (one shared by the module's slow tests) clean,
scrape and synthesis verification write byte-for-byte what the default runner writes, while both workers
really run chunks."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_config import load_config
from pipeline_config.schema import CleanConfig, ExecutorConfig, ScrapeConfig, VerifyConfig
from tasks.common.parallel import Executor, stage_executor, worker_stats


class Offset:
    """A context whose prepare() must run before any chunk: chunks fail on an unprepared copy."""

    def __init__(self, by: int):
        self.by, self.ready = by, False

    def prepare(self) -> None:
        self.ready = True

    def __getstate__(self) -> dict:
        return {"by": self.by, "ready": False}  # like clean's Context: what prepare() builds does not travel


def shifted(chunk: list[int], ctx: Offset) -> list[tuple[int, int]]:
    assert ctx.ready, "a chunk ran on an unprepared context"
    return [(n + ctx.by, os.getpid()) for n in chunk]


def flat(parts) -> list:
    return [x for part in parts for x in part]


# --- no cluster -------------------------------------------------------------------------------------------


def test_executor_is_in_no_stage_key() -> None:
    from flows.finetune import DAG
    from flows.runner import plan

    local = load_config("pipeline_config/tiny.yaml")
    dask = local.model_copy(update={"executor": ExecutorConfig(backend="dask", address="tcp://x:8786")})
    assert local.executor.backend == "local"
    assert plan(local, DAG).keys == plan(dask, DAG).keys


def test_executor_config_names_the_key() -> None:
    with pytest.raises(ValidationError, match="executor.address is used only with executor.backend: dask"):
        ExecutorConfig(address="tcp://x:8786")
    with pytest.raises(ValidationError):
        ExecutorConfig(backend="ray")


def test_local_backend_keeps_order_in_process() -> None:
    with Executor() as runner:
        out = flat(
            runner.map_chunks(shifted, list(range(10)), Offset(100), chunk=3, workers=2, parallel_from=50)
        )
    assert [n for n, _ in out] == list(range(100, 110))
    assert {pid for _, pid in out} == {os.getpid()}  # below parallel_from: no pool is started


# --- on a Dask LocalCluster of 2 workers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as c,
        distributed.Client(c) as client,
    ):
        yield c, client


@pytest.fixture
def dask_cfg(cluster) -> ExecutorConfig:
    return ExecutorConfig(backend="dask", address=cluster[0].scheduler_address)


def worker_counts(client) -> dict[str, dict]:
    return client.run(worker_stats)


def delta(before: dict, after: dict, field: str) -> dict[str, int]:
    return {w: after[w][field] - before[w][field] for w in after}


@pytest.mark.slow
def test_dask_map_keeps_order_and_uses_both_workers(cluster, dask_cfg) -> None:
    _, client = cluster
    before = worker_counts(client)
    with Executor(dask_cfg) as runner:
        out = flat(runner.map_chunks(shifted, list(range(200)), Offset(7), chunk=1000))
    assert [n for n, _ in out] == list(range(7, 207))  # one chunk of 1000 is cut down to 8 tasks
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert set(delta(before, worker_counts(client), "prepared").values()) == {1}  # once per worker


@pytest.mark.slow
def test_clean_on_dask_writes_what_the_default_runner_writes(cluster, dask_cfg, tmp_path: Path) -> None:
    from benchmarks.planted_clean import planted_set
    from tasks.clean.pipeline import PARALLEL_FROM, clean_pairs

    rows = planted_set(distinct=2000, near=150, renamed=40, leaks=20, exact=20, seed=5)
    assert len(rows) < PARALLEL_FROM  # the default runner does it in this process
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    cfg = CleanConfig(decontaminate={"humaneval": True, "held_out": False})
    reports = {}
    _, client = cluster
    before = worker_counts(client)
    for name, executor in (("default", None), ("dask", dask_cfg)):
        (tmp_path / name).mkdir()
        reports[name] = clean_pairs(tmp_path / "pairs.jsonl", tmp_path / name, cfg, executor=executor)
    tasks, prepared = (
        delta(before, worker_counts(client), "tasks"),
        delta(before, worker_counts(client), "prepared"),
    )
    assert len(tasks) == 2 and min(tasks.values()) >= 1, tasks  # both workers ran chunks
    # once per worker and pass (decontamination's corpus count, then the row phase), not once per chunk
    assert set(prepared.values()) == {2}
    assert reports["default"] == reports["dask"]
    assert reports["dask"]["dropped"]["near_duplicate"] >= 148 and reports["dask"]["rows_out"] > 1900
    for name in ("pairs.jsonl", "rejected.jsonl", "rejections.jsonl", "report.md"):
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name


DOCUMENTED = '''\
def f{n}(a, b=2):
    """Add {n}.

    >>> f{n}(1)
    {n}
    """
    return a + b


class C{n}:
    """A class."""

    def m(self):
        """A method."""
'''


def write_tree(root: Path) -> None:
    """240 files: mostly documented modules, and 24 of each kind of file the scrape skips or fails (more than
    the report keeps examples of: the examples kept must be the first ones, whichever worker saw them)."""
    for n in range(240):
        path = root / f"pkg{n % 3}" / f"mod{n:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = n % 10
        if kind == 1:
            path.write_text("def broken(:\n    pass\n")
        elif kind == 2:
            path.write_text('print "python 2"\n')
        elif kind == 3:
            path.write_bytes(b"\x00\x01binary")
        elif kind == 4:
            path.write_text(
                "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + DOCUMENTED.format(n=n)
            )
        else:
            path.write_text(DOCUMENTED.format(n=n))


@pytest.mark.slow
def test_scrape_on_dask_writes_what_the_default_runner_writes(cluster, dask_cfg, tmp_path: Path) -> None:
    from tasks.scrape.collect import scrape_sources

    write_tree(tmp_path / "tree")
    cfg = ScrapeConfig(sources=["package", "local"], package="json", local_dirs=[str(tmp_path / "tree")])
    _, client = cluster
    reports = {}
    before = worker_counts(client)
    for name, executor in (("default", None), ("dask", dask_cfg)):
        (tmp_path / name).mkdir()
        reports[name] = scrape_sources(tmp_path / name, cfg, tmp_path, executor)
    tasks = delta(before, worker_counts(client), "tasks")
    assert len(tasks) == 2 and min(tasks.values()) >= 1, tasks
    assert reports["default"] == reports["dask"]
    failed = reports["dask"]["files"]["failed"]
    assert failed["syntax_error"] == 24 and failed["python2_syntax"] == 24 and failed["binary"] == 24
    assert reports["dask"]["files"]["skipped"]["generated"] == 24
    assert reports["dask"]["rows_out"] > 3 * 144  # the documented modules' function, class and method
    for name in ("records.jsonl", "report.md"):
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name


@pytest.mark.slow
def test_verification_on_dask_gives_the_default_runner_verdicts(cluster, dask_cfg) -> None:
    from tasks.synthesize.verify import verify

    add = "def add(a, b):\n    return a + b\n"
    tasks = [(add, f"assert add({i}, 1) == {i + 1 if i % 3 else 0}") for i in range(8)]
    tasks += [(add, ""), ("def add(a, b)\n", "assert add(1, 2) == 3"), (add, "assert add(1, 1) == 2\nadd(1)")]
    cfg = VerifyConfig(timeout_s=5, cpu_s=5)
    _, client = cluster
    before = worker_counts(client)
    local, dask = verify(tasks, cfg), verify(tasks, cfg, dask_cfg)
    tasks_run = delta(before, worker_counts(client), "tasks")
    assert len(tasks_run) == 2 and min(tasks_run.values()) >= 1, tasks_run
    assert local == dask
    # as the synthesize stage runs it: the executor set for the stage, not passed down its generators
    before = worker_counts(client)
    with stage_executor(dask_cfg):
        assert verify(tasks, cfg) == local
    assert sum(delta(before, worker_counts(client), "tasks").values()) >= 2
    assert Counter(v.kind for v in dask) == Counter(
        {"passed": 5, "assertion": 3, "no_tests": 1, "syntax_error": 1, "crash": 1}
    )


@pytest.mark.slow
def test_a_flow_on_a_dask_task_runner_lends_its_cluster(prefect_server, cluster) -> None:
    """executor.backend: dask without an address, in a flow run on prefect-dask's DaskTaskRunner: the stages
    use that runner's cluster (here the module's), not a LocalCluster of their own."""
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    @task
    def work() -> list:
        with Executor(ExecutorConfig(backend="dask")) as runner:
            return flat(runner.map_chunks(shifted, list(range(40)), Offset(0), chunk=100))

    @flow(task_runner=DaskTaskRunner(address=cluster[0].scheduler_address))
    def on_dask() -> list:
        return work()

    out = on_dask()
    assert [n for n, _ in out] == list(range(40))
    workers = {info["pid"] for info in worker_counts(cluster[1]).values()}
    assert {pid for _, pid in out} == workers
