"""MLflow bookkeeping: where the tracking store lives and the one MLflow run each pipeline run gets.

Default store: `mlflow/mlflow.db` (sqlite) with artifacts in `mlflow/artifacts`, both at the repo root and
gitignored; MLFLOW_TRACKING_URI overrides it (e.g. a shared `mlflow server`). With a local store the
experiment is created up front with an explicit artifact location: with sqlite, MLflow would otherwise
store `./mlruns` relative to whatever directory the first run happened to start in, forever. With a
server, the server decides (a client-side path would be wrong on every other machine).

Each run is tagged with the host and process that own it, so that a run left RUNNING by a killed process
is marked KILLED by the next run on that host (`end_orphaned_runs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.common.io import REPO_ROOT, iter_jsonl
from tasks.common.stage import HOST, process_alive

STORE_DIR = REPO_ROOT / "mlflow"
EXPERIMENT = "finetune"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{STORE_DIR / 'mlflow.db'}"


def artifact_root() -> str:
    return os.environ.get("FINETUNE_MLFLOW_ARTIFACTS") or (STORE_DIR / "artifacts").as_uri()


def client():
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_id(mlflow_client, name: str = EXPERIMENT) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    if not is_local_store(tracking_uri()):
        return mlflow_client.create_experiment(name)
    return mlflow_client.create_experiment(name, artifact_location=f"{artifact_root()}/{name}")


def version_exists(model_name: str | None, version: str | None) -> bool:
    from mlflow.exceptions import MlflowException

    if not model_name or not version:
        return False
    try:
        client().get_model_version(model_name, str(version))
    except MlflowException:
        return False
    return True


def end_orphaned_runs(name: str = EXPERIMENT) -> list[str]:
    """Mark KILLED the RUNNING runs whose owning process on this host is gone; return their ids."""
    c = client()
    found = c.get_experiment_by_name(name)
    if not found:
        return []
    ended = []
    for run in c.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("host") != HOST or not tags.get("pid", "").isdigit():
            continue
        if not process_alive(int(tags["pid"])):
            c.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
    return ended

    return True


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


def start_run(config: Mapping[str, Any], run_name: str, tags: Mapping[str, str]) -> str:
    """Open the pipeline run's MLflow run; the resolved config becomes its params."""
    c = client()
    owner = {"host": HOST, "pid": str(os.getpid())}
    run = c.create_run(experiment_id(c), run_name=run_name, tags={**tags, **owner})
    params = flatten("", config)
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def numeric_metrics(prefix: str, report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a stage report (nested dicts flattened), as MLflow metrics."""
    out: dict[str, float] = {}
    for k, v in report.items():
        name = f"{prefix}.{k}"
        if isinstance(v, Mapping):
            out.update(numeric_metrics(name, v))
        elif isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            out[name] = float(v)
    return out


# small files worth seeing next to the run in the MLflow UI (the data itself stays in the workspace)
ARTIFACTS = (
    "report.json",
    "log_history.json",
    "loss.png",
    "predictions.jsonl",
    "humaneval.jsonl",
    "sklearn_doctests.jsonl",
    "report.md",
    "registration.json",
    "README.md",
    "rejected.jsonl",  # clean: every dropped row with its reason
)
# per-example files also logged as MLflow tables (the UI's artifact view shows them as sortable tables)
TABLES = ("predictions.jsonl", "humaneval.jsonl", "sklearn_doctests.jsonl", "rejections.jsonl")


def table_rows(path: Path) -> list[dict[str, Any]]:
    """A JSONL file as flat rows: nested fields become dotted columns (scores.base.rougeL)."""
    return [flatten("", row, as_text=False) for row in iter_jsonl(path)]


def curve_metrics(stage: str, folder: Path) -> list:
    """A trainer's log history as step-indexed metrics, so the MLflow UI draws the loss curves."""
    from mlflow.entities import Metric

    history = folder / "log_history.json"
    if not history.is_file():
        return []
    rows = json.loads(history.read_text())
    return [
        Metric(f"{stage}.curve.{name}", float(row[name]), 0, int(row["step"]))
        for row in rows
        for name in ("loss", "eval_loss", "learning_rate")
        if name in row and "step" in row
    ]


def log_stage(
    run_id: str, stage: str, key: str, status: str, report: Mapping[str, Any], folder: Path
) -> None:
    from mlflow.entities import Metric, RunTag

    c = client()
    metrics = [Metric(k, v, 0, 0) for k, v in numeric_metrics(stage, report).items()]
    metrics += curve_metrics(stage, folder)
    tags = [RunTag(f"stage.{stage}.key", key), RunTag(f"stage.{stage}.status", status)]
    for i in range(0, max(len(metrics), 1), 1000):  # log_batch takes at most 1000 metrics
        c.log_batch(run_id, metrics=metrics[i : i + 1000], tags=tags if i == 0 else [])
    for name in ARTIFACTS:
        if (folder / name).is_file():
            c.log_artifact(run_id, str(folder / name), artifact_path=f"stages/{stage}")
    for name in TABLES:
        if (folder / name).is_file() and (rows := table_rows(folder / name)):
            import pandas as pd

            c.log_table(run_id, pd.DataFrame(rows), f"stages/{stage}/{Path(name).stem}.table.json")


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)
