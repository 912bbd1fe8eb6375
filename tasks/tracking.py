"""MLflow bookkeeping: where the tracking store lives and the one MLflow run each pipeline run gets.

Default store: `mlflow/mlflow.db` (sqlite) with artifacts in `mlflow/artifacts`, both at the repo root and
gitignored; MLFLOW_TRACKING_URI overrides it (e.g. a shared `mlflow server`). The experiment is created up
front with an explicit artifact location: with sqlite, MLflow would otherwise store `./mlruns` relative to
whatever directory the first run happened to start in, forever.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline_config.schema import REPO_ROOT

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


def experiment_id(mlflow_client, name: str = EXPERIMENT) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=f"{artifact_root()}/{name}")


def flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:6000]}


def start_run(config: Mapping[str, Any], run_name: str, tags: Mapping[str, str]) -> str:
    """Open the pipeline run's MLflow run; the resolved config becomes its params."""
    c = client()
    run = c.create_run(experiment_id(c), run_name=run_name, tags=dict(tags))
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


def log_stage(run_id: str, stage: str, key: str, status: str, report: Mapping[str, Any]) -> None:
    from mlflow.entities import Metric, RunTag

    c = client()
    metrics = [Metric(k, v, 0, 0) for k, v in numeric_metrics(stage, report).items()]
    tags = [RunTag(f"stage.{stage}.key", key), RunTag(f"stage.{stage}.status", status)]
    c.log_batch(run_id, metrics=metrics[:1000], tags=tags)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)
