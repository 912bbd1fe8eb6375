"""Prefect retries a stage only when another attempt can help: a teacher that stayed busy, a dropped
connection; never a 401 or a bad config."""

from __future__ import annotations

import pytest
import requests

from flows.stage_tasks import is_transient, stage_task
from pipeline_config import load_config
from tasks.common.stage import StageResult, StageSpec
from tasks.common.teacher import TeacherError


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TeacherError("HTTP 401: bad key"), False),
        (TeacherError("gave up after 4 attempts; last error: HTTP 503", transient=True), True),
        (requests.ConnectionError("reset"), True),
        (ValueError("train.lora.r must be > 0"), False),
    ],
)
def test_is_transient(error, transient):
    assert is_transient(error) is transient


@pytest.mark.parametrize(
    ("error", "attempts"), [(TeacherError("HTTP 401"), 1), (ConnectionError("reset"), 3)]
)
def test_stage_task_retries_only_transient_errors(prefect_server, tmp_path, error, attempts):
    calls: list[int] = []

    def run(cfg, inputs, out_dir, context) -> StageResult:
        calls.append(1)
        raise error

    spec = StageSpec("clean", run, "tasks.clean", sections=("clean",), retries=2)
    cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": str(tmp_path)})
    task = stage_task(spec, retry_delay_seconds=0)
    with pytest.raises(type(error)):
        task(cfg, {})
    assert len(calls) == attempts


def test_a_stage_found_in_its_folder_is_cached_whatever_prefect_remembers(prefect_server, tmp_path):
    """A worker whose Prefect result store has never seen the key (refresh_cache: as if it were new)
    still reports Cached when the stage folder holds the output, and does not run the stage again."""
    from prefect import flow

    calls: list[int] = []

    def run(cfg, inputs, out_dir, context) -> StageResult:
        calls.append(1)
        return StageResult({"rows_in": 1, "rows_out": 1}, {})

    spec = StageSpec("clean", run, "tasks.clean", sections=("clean",))
    cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": str(tmp_path)})
    task = stage_task(spec)

    @flow
    def twice():
        first = task.with_options(refresh_cache=True)(cfg, {}, return_state=True)
        second = task.with_options(refresh_cache=True)(cfg, {}, return_state=True)
        return first, second

    first, second = twice()
    assert (first.name, second.name) == ("Completed", "Cached")
    assert second.result().status == "cached" and second.result().key == first.result().key
    assert len(calls) == 1


def test_stages_queue_on_a_global_concurrency_limit(prefect_server, tmp_path):
    """Two flow runs whose stage needs the "sandbox": with a limit of 1 they take turns; a resource the
    server has no limit for does not hold anyone up."""
    import asyncio
    import threading

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async def create_limit():
        async with get_client() as client:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name="sandbox", limit=1)
            )

    asyncio.run(create_limit())

    def most_at_once(resource: str) -> int:
        lock, active, peak = threading.Lock(), [0], [0]
        both_in = threading.Event()

        def run(cfg, inputs, out_dir, context) -> StageResult:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                if active[0] == 2:
                    both_in.set()
            # wait for the other run rather than sleep a fixed time: flow start-up on a busy machine can
            # outlast any fixed overlap; under a limit of 1 the other cannot come in and this times out
            both_in.wait(timeout=6)
            with lock:
                active[0] -= 1
            return StageResult({"rows_in": 1, "rows_out": 1}, {})

        spec = StageSpec(
            "evaluate", run, "tasks.evaluation", sections=("evaluate",), resources=lambda c: (resource,)
        )
        task = stage_task(spec)

        @flow
        def one(workspace: str):
            cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": workspace})
            task(cfg, {})

        threads = [threading.Thread(target=one, args=(str(tmp_path / resource / str(i)),)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return peak[0]

    assert most_at_once("sandbox") == 1
    assert most_at_once("no-such-limit") == 2


@pytest.mark.parametrize(
    ("synthesize", "held"),
    [
        ({"self_instruct": {"enabled": False}}, ()),  # docstring pairs only: no teacher, no sandbox
        ({"teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}, ("teacher", "sandbox")),
        ({"verify": {"enabled": False}}, ()),  # the local teacher on the CPU holds nothing scarce
        ({}, ("sandbox",)),
    ],
)
def test_synthesize_holds_the_teacher_and_the_sandbox(synthesize, held):
    from tasks import synthesize as stage

    cfg = load_config("pipeline_config/tiny.yaml")
    raw = cfg.model_dump()
    for key, value in synthesize.items():
        raw["synthesize"][key] = {**raw["synthesize"][key], **value}
    raw["synthesize"]["self_instruct"]["enabled"] = synthesize.get("self_instruct", {}).get("enabled", True)
    assert stage.resources(type(cfg).model_validate(raw)) == held
