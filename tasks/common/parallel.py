"""Where the data stages' per-row work runs: in this process, in a local process pool, or on a Dask cluster.

One seam, `Executor.map_chunks(fn, items, context, ...)`: `fn(chunk, context)` over consecutive chunks of
`items`, results yielded in input order as they are ready, so a stage's output never depends on where (or
in how many pieces) the work ran. `context` holds what every chunk needs; its `prepare()` (building filter
closures, compiling patterns, probing the sandbox) runs once per worker process, not once per chunk.

Backends, chosen by the config's `executor` section (pipeline_config/schema/runtime.py ExecutorConfig, in no
stage key):
- `local` (default): in this process below `parallel_from` items or with one worker; above it, a spawn
  process pool of `workers` (spawn, not fork: the flow's process runs Prefect's and MLflow's threads,
  whose locks a fork copies).
- `dask`: a distributed Client. With `executor.address`, that scheduler; without one, the cluster of the
  running flow's prefect-dask DaskTaskRunner if it has one (tasks/common/runtime.py), else a LocalCluster
  of `executor.n_workers` processes (one thread each) that lives as long as the `Executor`. Every input
  goes to the cluster (no `parallel_from`), in at least TASKS_PER_THREAD chunks per worker thread. The
  context is scattered to every worker once; each worker prepares it on first use and keeps it (keyed by
  the scattered data's key). Workers need the project installed (the same image) and receive chunks by
  value: they read no file of this machine.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from pipeline_config.schema import ExecutorConfig
from tasks.common.scoped import StageSetting

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C", bound="Context")

TASKS_PER_THREAD = 4  # Dask chunks per worker thread: enough to balance, few enough to keep overhead low
IN_FLIGHT_PER_THREAD = 2 * TASKS_PER_THREAD  # chunks sent ahead of the one being consumed (memory bound)


class Context(Protocol):
    def prepare(self) -> None:
        """One-time set-up in each process that runs chunks (what does not pickle, or is costly)."""


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- what runs in a worker process -------------------------------------------------------------------------

_PREPARED: dict[str, Any] = {}  # token -> the prepared context, in each worker process
_LOCK = threading.Lock()  # a Dask worker may run several threads
_STATS: Counter = Counter()  # this process: chunks run, contexts prepared (worker_stats)
_KEEP = 4  # prepared contexts a worker keeps (one per concurrent map; older ones are dropped)


def _prepared(token: str, context: Context) -> Context:
    with _LOCK:
        if token not in _PREPARED:
            context.prepare()
            _STATS["prepared"] += 1
            while len(_PREPARED) >= _KEEP:
                _PREPARED.pop(next(iter(_PREPARED)))
            _PREPARED[token] = context
        return _PREPARED[token]


def _init_pool(context: Context) -> None:
    _prepared("pool", context)


def _pool_task(fn: Callable[[list, Any], R], chunk: list) -> R:
    _STATS["tasks"] += 1
    return fn(chunk, _PREPARED["pool"])


def _dask_task(fn: Callable[[list, Any], R], chunk: list, context: Context, token: str) -> R:
    prepared = _prepared(token, context)
    with _LOCK:
        _STATS["tasks"] += 1
    return fn(chunk, prepared)


def worker_stats() -> dict:
    """This process's pid and counts; `client.run(worker_stats)` asks every Dask worker."""
    return {"pid": os.getpid(), "tasks": _STATS["tasks"], "prepared": _STATS["prepared"]}


# --- the seam ----------------------------------------------------------------------------------------------


# The executor of the stage that is running, for per-row work deep below it (the synthesize stage's
# verification runs inside its generators' filters). An explicit `Executor(cfg)` wins.
_STAGE_EXECUTOR: StageSetting[ExecutorConfig | None] = StageSetting("stage_executor", None)


def stage_executor(cfg: ExecutorConfig) -> contextlib.AbstractContextManager[None]:
    return _STAGE_EXECUTOR.scope(cfg)


def current_stage_executor() -> ExecutorConfig | None:
    return _STAGE_EXECUTOR.get()


class Executor:
    """The configured backend for the `with` block; a Dask client is opened on first use, closed at exit."""

    def __init__(self, cfg: ExecutorConfig | None = None):
        self.cfg = cfg or _STAGE_EXECUTOR.get() or ExecutorConfig()
        self._stack = contextlib.ExitStack()
        self._client = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self._stack.enter_context(dask_client(self.cfg))
        return self._client

    def map_chunks(
        self,
        fn: Callable[[list[T], C], R],
        items: Sequence[T],
        context: C,
        *,
        chunk: int,
        workers: int = 1,
        parallel_from: int = 0,
    ) -> Iterator[R]:
        """`fn(chunk, context)` over chunks of at most `chunk` items, in input order. `fn` must be a
        module-level function (it is pickled by name) and its result must not depend on the chunking."""
        if self.cfg.backend == "dask":
            yield from self._dask_map(fn, items, context, chunk)
        elif workers <= 1 or len(items) < parallel_from:
            context.prepare()
            yield from (fn(part, context) for part in chunked(items, chunk))
        else:
            with multiprocessing.get_context("spawn").Pool(workers, _init_pool, (context,)) as pool:
                yield from pool.imap(partial(_pool_task, fn), chunked(items, chunk))

    def _dask_map(self, fn, items, context, chunk: int) -> Iterator:
        if not items:
            return
        client = self.client
        threads = max(1, sum(client.nthreads().values()))
        size = max(1, min(chunk, math.ceil(len(items) / (TASKS_PER_THREAD * threads))))
        shared = client.scatter(context, broadcast=True, hash=False)  # sent once to each worker
        parts = chunked(items, size)
        pending: deque = deque()

        def submit_next() -> None:
            part = next(parts, None)
            if part is not None:
                pending.append(client.submit(_dask_task, fn, part, shared, shared.key, pure=False))

        try:
            for _ in range(IN_FLIGHT_PER_THREAD * threads):
                submit_next()
            while pending:
                result = pending.popleft().result()  # a worker's exception is raised here, as it was
                submit_next()
                yield result
        finally:
            for future in pending:
                future.cancel()
            shared.release()


@contextlib.contextmanager
def dask_client(cfg: ExecutorConfig):
    """A distributed Client for `cfg`: its address, else the flow's DaskTaskRunner, else a LocalCluster."""
    from distributed import Client, LocalCluster

    if cfg.address:
        with Client(cfg.address) as client:
            yield client
        return
    from tasks.common.runtime import flow_dask_client

    with flow_dask_client() as client:
        if client is not None:
            yield client
            return
    cluster = LocalCluster(
        n_workers=cfg.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, Client(cluster) as client:
        yield client
