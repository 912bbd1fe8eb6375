"""MLflow bookkeeping of a pipeline run: the one MLflow run each pipeline run gets, what each stage logs to
it, and the store's client (tasks/common/mlflow_store.py). Orchestration, not stage code: no stage imports
this module, so an edit here re-keys no stage.

Each profile has its own experiment (`finetune-<profile>`), so runs that can be compared sit together.
Each run is tagged with the host and process that own it, so that a run left RUNNING by a killed process
is marked KILLED by the next run on that host (`end_orphaned_runs`).

Metric names are laid out for the UI, which draws one chart section per name prefix (everything before the
last "/"), sorted by name, with un-prefixed names last ("Model metrics"): the headline numbers (the loss
curves, the final training loss, the evaluation's headline scores beside the base model's) are
`headline/...` and come first; each stage's own numbers are `stages/<stage>/...`, one section per stage, and
only the few that compare across runs: the report's top-level numbers (rows in and out, seconds, steps...)
and the evaluation's means per system. Counters by reason, per-item scores and settings stay in the
stage's report.json, logged as an artifact. The run's description, the gate's decision as tags, the
comparison chart and the dataset inputs are flows/run_page.py's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows import run_page
from pipeline_config.redact import redact_value
from tasks.common.io import iter_jsonl
from tasks.common.mlflow_store import (  # noqa: F401 -- the store's names, for the flows' use
    EXPERIMENT,
    STORE_DIR,
    artifact_root,
    client,
    experiment_id,
    experiment_name,
    is_local_store,
    tracking_uri,
    version_exists,
)
from tasks.common.publish import HOST, process_alive
from tasks.evaluation.report import HEADLINE_METRICS


def end_orphaned_runs() -> tuple[list[str], list[dict[str, str]]]:
    """Mark KILLED the RUNNING runs whose owning process on this host is gone. Returns their ids, and
    the runs still RUNNING in another live process on this host (their tags)."""
    c = client()
    ids = [e.experiment_id for e in c.search_experiments() if e.name.startswith(EXPERIMENT)]
    if not ids:
        return [], []
    ended, live = [], []
    for run in c.search_runs(ids, filter_string=f"attributes.status = 'RUNNING' and tags.host = '{HOST}'"):
        pid = run.data.tags.get("pid", "")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if process_alive(int(pid)):
            live.append(run.data.tags)
        else:
            c.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended, live


def flatten(prefix: str, value: Any, as_text: bool = True) -> dict[str, Any]:
    """Nested mappings as dotted keys; values as text (MLflow params) or, with as_text=False, numbers kept."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v, as_text))
        return out
    if not as_text and isinstance(value, int | float):
        return {prefix: value}
    return {prefix: str(value)[:6000]}


def start_run(
    config: Mapping[str, Any], run_name: str, tags: Mapping[str, str], experiment: str = EXPERIMENT
) -> str:
    """Open the pipeline run's MLflow run; the resolved config becomes its params (pass
    pipeline_config.redact.public_dump(cfg); URLs are redacted here again in case a caller did not)."""
    c = client()
    owner = {"host": HOST, "pid": str(os.getpid())}
    run = c.create_run(experiment_id(c, experiment), run_name=run_name, tags={**tags, **owner})
    if (name := distinct_name(c, run)) != run_name:
        c.update_run(run.info.run_id, name=name)
    params = flatten("", redact_value(config))
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def distinct_name(c, run) -> str:
    """`run`'s name, or, when an earlier run of its experiment has that name (two runs of one config started
    within the minute the name shows), the name with this run's start time to the second and the start of
    its id. Looked up after the run exists, so that of two runs opened at the same instant the later (by
    start time, then id) is the one renamed."""
    from datetime import UTC, datetime

    name, info = run.info.run_name, run.info
    quote = next((q for q in "'\"" if q not in name), None)
    if quote:
        found = f"attributes.run_name = {quote}{name}{quote}"
    else:  # MLflow's filter has no escapes: a superset by the name's start, matched exactly below
        found = f"attributes.run_name LIKE '{name.split(chr(39))[0]}%'"
    same = [o for o in c.search_runs([info.experiment_id], filter_string=found) if o.info.run_name == name]
    if not any((o.info.start_time, o.info.run_id) < (info.start_time, info.run_id) for o in same):
        return name
    started = datetime.fromtimestamp(info.start_time / 1000, UTC)
    minute, second = f" {started:%H:%M} ", f" {started:%H:%M:%S} "
    timed = name.replace(minute, second, 1) if minute in name else f"{name}{second.rstrip()}"
    return f"{timed} ({info.run_id[:6]})"


def numeric_metrics(prefix: str, report: Mapping[str, Any], sep: str = ".") -> dict[str, float]:
    """The numbers of a stage report (nested dicts flattened), as MLflow metrics."""
    out: dict[str, float] = {}
    for k, v in report.items():
        name = f"{prefix}{sep}{k}"
        if isinstance(v, Mapping):
            out.update(numeric_metrics(name, v))
        elif isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            out[name] = float(v)
    return out


HEADLINE_GROUP = "headline"  # sorts before "stages": the UI's first chart section
STAGE_GROUP = "stages"
# The headline numbers: name -> the report path it copies.
HEADLINE = {
    "train": {f"{HEADLINE_GROUP}/train_loss": ("train_loss",)},
    "evaluate": {
        f"{HEADLINE_GROUP}/{name}{suffix}": ("means", system, name)
        for name in HEADLINE_METRICS
        for system, suffix in (("finetuned", ""), ("base", "_base"))
    },
}
# the nested parts of a report worth a chart each besides its top-level numbers
STAGE_SECTIONS = {"evaluate": ("means",)}
CURVES = {  # the trainer's log history, by step
    "loss": f"{HEADLINE_GROUP}/loss",
    "eval_loss": f"{HEADLINE_GROUP}/eval_loss",
    "learning_rate": f"{STAGE_GROUP}/train/learning_rate",
    "num_input_tokens_seen": f"{STAGE_GROUP}/train/input_tokens_by_step",
}


def headline_metrics(stage: str, report: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, path in HEADLINE.get(stage, {}).items():
        value: Any = report
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            out[name] = float(value)
    return out


def stage_metrics(stage: str, report: Mapping[str, Any]) -> dict[str, float]:
    """`stages/<stage>/<name>`: the report's top-level numbers, and its sections in STAGE_SECTIONS
    flattened (`stages/evaluate/means.base.heldout.rougeL`)."""
    prefix = f"{STAGE_GROUP}/{stage}"
    kept = {
        k: v for k, v in report.items() if k in STAGE_SECTIONS.get(stage, ()) or not isinstance(v, Mapping)
    }
    return numeric_metrics(prefix, kept, sep="/")


# the evaluation's per-item files (one per suite) and its comparisons
EVALUATION_TABLES = (
    "comparisons.jsonl",
    "predictions.jsonl",
    "completion.jsonl",
    "fim.jsonl",
    "humaneval.jsonl",
    "sklearn_doctests.jsonl",
)
# small files worth seeing next to the run in the MLflow UI (the data itself stays in the workspace)
ARTIFACTS = (
    "report.json",
    "log_history.json",
    "loss.png",
    *EVALUATION_TABLES,
    "report.md",
    "registration.json",
    "README.md",
    "rejected.jsonl",  # clean: every dropped row with its reason
)
# per-example files also logged as MLflow tables (the UI's artifact view shows them as sortable tables)
TABLES = (*EVALUATION_TABLES, "rejections.jsonl")


def table_rows(path: Path) -> list[dict[str, Any]]:
    """A JSONL file as flat rows: nested fields become dotted columns (scores.base.rougeL)."""
    return [flatten("", row, as_text=False) for row in iter_jsonl(path)]


def curve_metrics(folder: Path) -> list:
    """A trainer's log history as step-indexed metrics, so the MLflow UI draws the loss curves."""
    from mlflow.entities import Metric

    history = folder / "log_history.json"
    if not history.is_file():
        return []
    rows = json.loads(history.read_text())
    return [
        Metric(metric, float(row[name]), 0, int(row["step"]))
        for row in rows
        for name, metric in CURVES.items()
        if name in row and "step" in row
    ]


def log_stage(
    run_id: str,
    stage: str,
    key: str,
    status: str,
    report: Mapping[str, Any],
    folder: Path,
    numbers: bool = True,
) -> None:
    """A stage's key and status as tags; with `numbers`, its report as metrics, its small files as
    artifacts and what it adds to the run's page (flows/run_page.py). A run that only found every stage
    cached logs tags alone: nothing new to compare."""
    from mlflow.entities import Metric, RunTag

    c = client()
    tags = [RunTag(f"stage.{stage}.key", key), RunTag(f"stage.{stage}.status", status)]
    if not numbers:
        c.log_batch(run_id, tags=tags)
        return
    found = headline_metrics(stage, report) | stage_metrics(stage, report)
    metrics = [Metric(k, v, 0, 0) for k, v in found.items()] + curve_metrics(folder)
    for i in range(0, max(len(metrics), 1), 1000):  # log_batch takes at most 1000 metrics
        c.log_batch(run_id, metrics=metrics[i : i + 1000], tags=tags if i == 0 else [])
    for name in ARTIFACTS:
        if (folder / name).is_file():
            c.log_artifact(run_id, str(folder / name), artifact_path=f"stages/{stage}")
    for name in TABLES:
        if (folder / name).is_file() and (rows := table_rows(folder / name)):
            import pandas as pd

            c.log_table(run_id, pd.DataFrame(rows), f"stages/{stage}/{Path(name).stem}.table.json")
    run_page.log_page(c, run_id, stage, key, report, folder)


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def run_url(run_id: str) -> str | None:
    """The run's page in the MLflow UI when the store is a tracking server, else None."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    experiment = client().get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)
