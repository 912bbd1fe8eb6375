"""Where the MLflow store lives, and a client of it: what the register stage and the flows' bookkeeping
(flows/tracking.py) share. Default store: `mlflow/mlflow.db` (sqlite) with artifacts in `mlflow/artifacts`,
both at the repo root and gitignored; MLFLOW_TRACKING_URI overrides it (e.g. a shared `mlflow server`). With
a local store an experiment is created with an explicit artifact location: with sqlite, MLflow would
otherwise store `./mlruns` relative to whatever directory the first run happened to start in, forever. With a
server, the server decides (a client-side path would be wrong on every other machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tasks.common.io import REPO_ROOT

STORE_DIR = REPO_ROOT / "mlflow"
EXPERIMENT = "finetune"


def experiment_name(profile: str) -> str:
    return f"{EXPERIMENT}-{profile}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{STORE_DIR / 'mlflow.db'}"


def artifact_root() -> str:
    return os.environ.get("FINETUNE_MLFLOW_ARTIFACTS") or (STORE_DIR / "artifacts").as_uri()


def client():
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with _opening(uri):
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextlib.contextmanager
def _opening(uri: str) -> Iterator[None]:
    """Serialize opening a sqlite store between processes. The first client of a new (or older-schema) store
    creates its tables by migration; two runs started at once would both migrate and one would fail
    ("table _alembic_tmp_experiments already exists"). flock: released by the kernel if the holder dies."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


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
