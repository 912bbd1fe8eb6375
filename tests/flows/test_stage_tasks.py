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


def _flow_run_artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state.name for r in runs}


def test_a_stages_progress_bars_move_one_artifact_named_for_the_profile(prefect_server, tmp_path):
    """evaluate generates for each model and suite: one progress artifact per stage, not one per loop."""
    from prefect import flow
    from prefect.context import get_run_context

    from tasks.common.progress import Progress

    def run(cfg, inputs, out_dir, context) -> StageResult:
        for loop in range(3):
            with Progress(4, f"generate {loop}", key="generation-progress", unit="prompt") as bar:
                bar.update(4)
        return StageResult({"rows_in": 1, "rows_out": 1}, {})

    spec = StageSpec("evaluate", run, "tasks.evaluation", sections=("evaluate",))
    cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": str(tmp_path)})

    @flow
    def evaluate():
        stage_task(spec)(cfg, {})
        return get_run_context().flow_run.id

    [artifact] = _flow_run_artifacts(evaluate())
    assert (artifact.key, artifact.type, float(artifact.data)) == (
        "tiny-evaluate-progress",
        "progress",
        100.0,
    )
    assert (
        artifact.description == "stage evaluate, profile tiny: generate 2: 4/4 prompt (loop 3 of this stage)"
    )


def test_stage_artifacts_name_the_profile_describe_themselves_and_train_has_its_numbers(
    prefect_server, tmp_path
):
    import json

    from prefect import flow
    from prefect.context import get_run_context

    from flows.stage_tasks import publish_artifacts, publish_mlflow_links
    from tasks.common.stage import StageOutput

    train, clean = tmp_path / "train", tmp_path / "clean"
    train.mkdir(), clean.mkdir()
    report = {"method": "lora", "device": "cpu", "precision": "fp32", "steps": 240, "resumed_from_step": 40}
    report |= {"tokens_seen": 14290, "rows_in": 37, "first_logged_loss": 6.4046, "last_logged_loss": 2.25}
    report |= {
        "best_eval_loss": 2.5,
        "best_step": 200,
        "trainable_parameters": 32768,
        "total_parameters": 175569,
    }
    (train / "report.json").write_text(json.dumps(report))
    history = [{"loss": 6.4046, "step": 1}, {"eval_loss": 2.5, "step": 200}, {"eval_loss": 2.75, "step": 240}]
    (train / "log_history.json").write_text(json.dumps(history))
    (clean / "report.md").write_text("# clean\nkept 70 of 80\n")
    (clean / "rejections.jsonl").write_text(json.dumps({"id": "a", "reason": "too_short"}) + "\n")

    def output(stage: str) -> StageOutput:
        path = f"/ws/stages/{stage}/k"
        return StageOutput(
            stage=stage, key="k" * 16, path=path, rows_in=1, rows_out=1, status="executed", seconds=1.0
        )

    @flow
    def publish():
        url = "http://mlflow:5000/#/experiments/3/runs/r1"
        publish_artifacts("Offline_GPU", output("train"), train, mlflow_url=url)
        publish_artifacts("Offline_GPU", output("clean"), clean)
        publish_mlflow_links(
            "Offline_GPU", {"run_id": "r1", "run_url": url, "tracking_uri": "http://mlflow:5000"}
        )
        return get_run_context().flow_run.id

    artifacts = {a.key: a for a in _flow_run_artifacts(publish())}
    assert set(artifacts) == {
        "offline-gpu-train-report",
        "offline-gpu-clean-report",
        "offline-gpu-clean-rejections",
        "offline-gpu-mlflow-run",
    }
    for key, artifact in artifacts.items():
        assert "Offline_GPU" in artifact.description, key
    table = artifacts["offline-gpu-train-report"].data
    for row in (
        "| steps | 240 (resumed from the checkpoint of step 40) |",
        "| tokens seen | 14,290 |",
        "| first logged loss | 6.4046 |",
        "| last logged loss | 2.2500 |",
        "| held-out loss | 2.7500 at step 240; best 2.5000 at step 200 |",
        "| loss plot | `/ws/stages/train/k/loss.png` ([in MLflow](http://mlflow:5000/#/experiments/3/runs/r1"
        "/artifactPath/stages/train/loss.png)) |",
    ):
        assert row in table.splitlines()


def test_a_stage_read_from_the_workspace_shows_cached_in_prefect(prefect_server, tmp_path):
    """--only: a stage outside it whose output feeds the run is listed in the flow run, Cached; and a stage
    whose task found its folder finished says Cached on the server too, not Completed."""
    from prefect import flow
    from prefect.context import get_run_context

    from flows.stage_tasks import reused_task

    def run(cfg, inputs, out_dir, context) -> StageResult:
        return StageResult({"rows_in": 1, "rows_out": 1}, {})

    spec = StageSpec("clean", run, "tasks.clean", sections=("clean",))
    cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": str(tmp_path)})

    @flow
    def build():
        stage_task(spec).with_options(refresh_cache=True)(cfg, {})
        return get_run_context().flow_run.id

    @flow
    def found():
        out = stage_task(spec).with_options(refresh_cache=True)(cfg, {})
        reused_task("tokenize")(out)
        return get_run_context().flow_run.id

    assert _task_states(build()) == {"clean": "Completed"}
    assert _task_states(found()) == {"clean": "Cached", "tokenize": "Cached"}
