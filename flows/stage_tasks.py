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
import json
from functools import cache
from pathlib import Path

import requests

from flows.tracking import TABLES, table_rows
from tasks.common.io import hash_json, workspace_location
from tasks.common.progress import artifact_key, stage_scope
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

        names = existing_limits(spec.resources(cfg)) if spec.resources else []
        with concurrency(names, occupy=1, strict=False) if names else contextlib.nullcontext():
            with stage_scope(cfg.name, spec.name):  # the stage's progress bars: one UI artifact
                out = spec.build(cfg, inputs, force, context)
        if out.status == "cached":
            # The stage folder is the truth: a worker whose result store has never seen this key still
            # finds the finished output, and the UI should say Cached, not "Completed in 0.0 s".
            return cached_state(out)
        return out

    return run_stage


def cached_state(out: StageOutput):
    """The state of a stage whose output was found in the workspace: a Completed state named Cached (what
    Prefect itself gives a cache hit), so the UI counts it as cached."""
    from prefect.states import Completed

    return Completed(name="Cached", data=out, message=f"found in the workspace: {out.path}")


@cache
def reused_task(name: str):
    """The Prefect task of a stage outside --only whose finished output feeds the stages that run: it runs
    nothing and ends Cached, so the flow run's task list still shows every stage it read."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    @task(name=name, task_run_name=name, cache_policy=NO_CACHE)
    def reuse_stage(out: StageOutput):
        return cached_state(out)

    return reuse_stage


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


def publish_artifacts(profile: str, out: StageOutput, folder: Path, mlflow_url: str | None = None) -> None:
    """A stage's report (`report.md`; train's numbers, which have none) and per-example tables as Prefect
    artifacts of the running flow (the UI's Artifacts tab). Keys name the profile and the stage, so each
    run adds a version to its profile's history and profiles do not mix."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    stage = out.stage
    about = f"stage `{stage}` of profile `{profile}` ({out.status}, key `{out.key[:12]}`)"
    if (folder / "report.md").is_file():
        create_markdown_artifact(
            (folder / "report.md").read_text(),
            key=artifact_key(profile, stage, "report"),
            description=f"The report of {about}; its data: `{out.path}`",
        )
    elif stage == "train":
        create_markdown_artifact(
            train_markdown(profile, out, folder, mlflow_url),
            key=artifact_key(profile, stage, "report"),
            description=f"Steps, tokens and losses of {about}",
        )
    for name in TABLES:
        if (folder / name).is_file() and (rows := table_rows(folder / name)):
            create_table_artifact(
                rows,
                key=artifact_key(profile, stage, Path(name).stem),
                description=f"`{name}` of {about}: one row per example",
            )


def train_markdown(profile: str, out: StageOutput, folder: Path, mlflow_url: str | None) -> str:
    """The train stage in numbers: steps, tokens, the loss at the first and last logged step, the held-out
    loss (measured during training with `train.eval_steps`), and where the loss plot is."""
    report = json.loads((folder / "report.json").read_text())
    history = json.loads(h.read_text()) if (h := folder / "log_history.json").is_file() else []
    evals = [row for row in history if "eval_loss" in row]
    steps = f"{report.get('steps')}"
    if report.get("resumed_from_step"):
        steps += f" (resumed from the checkpoint of step {report['resumed_from_step']})"
    if evals:
        heldout = f"{evals[-1]['eval_loss']:.4f} at step {evals[-1].get('step')}"
        if report.get("best_eval_loss") is not None:
            heldout += f"; best {report['best_eval_loss']:.4f} at step {report.get('best_step')}"
    else:
        heldout = "not measured during training (set `train.eval_steps`); see the evaluate report"
    plot = f"`{out.path}/loss.png`"
    if mlflow_url:
        plot += f" ([in MLflow]({mlflow_url}/artifactPath/stages/train/loss.png))"
    rows = [
        ("method", f"{report.get('method')} on {report.get('device')} ({report.get('precision')})"),
        ("steps", steps),
        ("tokens seen", _count(report.get("tokens_seen"))),
        ("training rows", _count(report.get("rows_in"))),
        ("first logged loss", _number(report.get("first_logged_loss"))),
        ("last logged loss", _number(report.get("last_logged_loss"))),
        ("held-out loss", heldout),
        (
            "trainable parameters",
            f"{_count(report.get('trainable_parameters'))} of {_count(report.get('total_parameters'))}",
        ),
        ("loss plot", plot),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"# train: profile {profile}\n\n| | |\n|---|---|\n{table}\n\nmodel: `{out.path}`\n"


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int | float) else "-"


def publish_mlflow_links(profile: str, record: dict) -> None:
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
    create_markdown_artifact(
        "\n".join(lines) + "\n",
        key=artifact_key(profile, "mlflow-run"),
        description=f"Where profile `{profile}`'s run is in MLflow, and the version it registered",
    )
