"""The Prefect side of a stage: the task that wraps it, its retries and concurrency slots, and the
artifacts a flow run publishes. Orchestration, not stage code: no stage imports this module, so an edit
here re-keys no stage.

A stage's Prefect cache key is its stage key, so the Prefect UI and the workspace agree about what is
cached. A stage that needs a scarce resource (the GPU, the teacher endpoint, the sandbox) holds a slot of
the Prefect global concurrency limit of that name while it runs (`make serve` creates them), so several
deployments on one work pool queue for it instead of oversubscribing it.

Prefect retries only errors that another attempt can fix (a dropped connection, a server that was busy);
a bad request or a bad config fails at once.
"""

from __future__ import annotations

import contextlib
from functools import cache
from pathlib import Path

import requests

from flows.tracking import TABLES, table_rows
from tasks.common.io import hash_json, workspace_location
from tasks.common.stage import StageContext, StageOutput, StageSpec

# what a retry can fix; anything else (a 401, a config error, a bug) would fail the same way again
TRANSIENT = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)


def is_transient(error: BaseException | None) -> bool:
    return isinstance(error, TRANSIENT) or bool(getattr(error, "transient", False))


def retry_condition(_task, _task_run, state) -> bool:
    return is_transient(state.data)  # a Failed state's data is the exception the task raised


@cache
def stage_task(spec: StageSpec, retry_delay_seconds: float = 10):
    """The Prefect task for a stage; its cache key is the stage key.

    The flow calls it with `refresh_cache=True` (task.with_options) when the stage is forced or its folder
    is gone, so that a Prefect record never shadows a deleted output.
    """
    from prefect import task

    def cache_key(_context, params: dict) -> str:
        cfg, inputs = params["cfg"], params["inputs"]
        key = spec.key(cfg, {n: o.key for n, o in inputs.items()})
        # the Prefect result store is shared by every workspace on the machine; keep workspaces apart
        return f"{key}-{hash_json(str(workspace_location(cfg)))[:8]}"

    @task(
        name=spec.name,
        task_run_name=spec.name,
        cache_key_fn=cache_key,
        persist_result=True,
        retries=spec.retries,
        retry_delay_seconds=retry_delay_seconds,
        retry_condition_fn=retry_condition,
    )
    def run_stage(
        cfg, inputs: dict[str, StageOutput], force: bool = False, context: StageContext | None = None
    ):
        from prefect.concurrency.sync import concurrency
        from prefect.states import Completed

        names = existing_limits(spec.resources(cfg)) if spec.resources else []
        with concurrency(names, occupy=1, strict=False) if names else contextlib.nullcontext():
            out = spec.build(cfg, inputs, force, context)
        if out.status == "cached":
            # The stage folder is the truth: a worker whose result store has never seen this key still
            # finds the finished output, and the UI should say Cached, not "Completed in 0.0 s".
            return Completed(name="Cached", data=out, message=f"stage folder {out.path}")
        return out

    return run_stage


def existing_limits(names) -> list[str]:
    """The resources the server has a global concurrency limit for. A server without one (no `make serve`)
    lets the stage run at once; asking first keeps Prefect from warning about every missing limit on every
    stage of every run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                continue
            found.append(name)
    return found


def publish_artifacts(stage: str, folder: Path) -> None:
    """A stage's `report.md` and per-example tables as Prefect artifacts of the running flow (the UI's
    Artifacts tab). Keys are per stage, so each run adds a version and the UI shows the history."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    slug = stage.replace("_", "-")
    if (folder / "report.md").is_file():
        create_markdown_artifact((folder / "report.md").read_text(), key=f"{slug}-report")
    for name in TABLES:
        if (folder / name).is_file() and (rows := table_rows(folder / name)):
            table_key = f"{slug}-{Path(name).stem.replace('_', '-')}"
            create_table_artifact(rows, key=table_key, description=f"{stage}: {name}")


def publish_mlflow_links(record: dict) -> None:
    """The flow run's link to its MLflow run and registered version (the UI's Artifacts tab)."""
    from prefect.artifacts import create_markdown_artifact

    run = f"[{record['run_id']}]({record['run_url']})" if record.get("run_url") else f"`{record['run_id']}`"
    lines = [
        "# MLflow",
        f"- run: {run} in experiment `{record.get('experiment')}` of `{record['tracking_uri']}`",
    ]
    if "version" in record:
        decision = "promoted to champion" if record["promoted"] else "not promoted"
        lines.append(
            f"- registered: `models:/{record['model_name']}/{record['version']}` "
            f"(aliases: {', '.join(record['aliases']) or 'none'}), {decision}: {record['gate_reason']}"
        )
    create_markdown_artifact("\n".join(lines) + "\n", key="mlflow-run")
