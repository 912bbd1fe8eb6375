"""`finetune runs` and `finetune show STAGE`: what the workspace holds, without starting Prefect or MLflow.

Runs are read from `<workspace>/runs/*/summary.json` (each run writes one, failed runs included); a stage
is found by the key the config gives it now, so `show` prints exactly what the next run would reuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.common.io import glob, join, read_json, workspace_location
from tasks.common.mlflow_store import STORE_DIR

STATUS_MARK = {"executed": "run", "cached": "cached"}


def list_runs(workspace: Path | str, limit: int = 10) -> str:
    """Newest first: one line per run (profile, status, how long it took, each stage's status, the model
    it registered) and under it where its MLflow run is. `workspace`: a folder or an fsspec URL."""
    summaries = list(reversed(glob(workspace, "runs/*/summary.json")))[:limit]
    if not summaries:
        return f"no runs in {join(workspace, 'runs')}"
    lines = []
    for path in summaries:
        s = read_json(path)
        stages = " ".join(f"{n}:{STATUS_MARK.get(o['status'], o['status'])}" for n, o in s["stages"].items())
        took = duration(s.get("seconds"))
        line = f"{s['run_id']}  {s.get('profile', '?'):<10} {s['status']:<9}  {took:>10}  {stages}"
        if s.get("failed_stage"):
            line += f"  FAILED at {s['failed_stage']}: {s.get('error', '')[:120]}"
        mlflow = s.get("mlflow") or {}
        if "version" in mlflow:
            line += f"  -> v{mlflow['version']} {'promoted' if mlflow.get('promoted') else 'not promoted'}"
        lines.append(line)
        if link := mlflow_link(mlflow):
            lines.append(f"    mlflow: {link}")
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """`42 s`, `12 min 03 s`, `1 h 02 min`; `-` for a summary written before runs recorded it."""
    if not isinstance(seconds, int | float):
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def mlflow_link(record: Mapping[str, Any]) -> str | None:
    """The run's page in the MLflow UI: the tracking server's, or for a local sqlite store the page
    `make tracking-server` serves it at; else the run id and its store."""
    run_id = record.get("run_id")
    if not run_id:
        return None
    if record.get("run_url"):
        return record["run_url"]
    uri, experiment = str(record.get("tracking_uri", "")), record.get("experiment_id")
    db = Path(uri.removeprefix("sqlite:///"))
    if experiment and uri.startswith("sqlite:///") and db.name == "mlflow.db":
        serve = "make tracking-server"
        if db != STORE_DIR / "mlflow.db":  # mlflow/server.sh serves <MLFLOW_STORE>/mlflow.db
            serve = f"MLFLOW_STORE={db.parent} {serve}"
        return f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id} (after `{serve}`)"
    return f"run {run_id} in {uri}"


def show_stage(cfg, config_path: str, stage: str) -> str:
    """A stage's report and the path of its data under the config's current key; raises LookupError with
    the command that builds it: the stage and whatever it reads that is not built either."""
    from flows.finetune import DAG
    from flows.runner import build_command, plan, read_or_missing, usable

    keys = plan(cfg, DAG, config_path=config_path).keys
    spec = next(module.SPEC for module, _ in DAG if module.SPEC.name == stage)
    out = usable(spec, workspace_location(cfg), keys[stage])
    if out is None:
        _, missing = read_or_missing(cfg, DAG, (stage,), keys)
        needs = (
            f" and the stages it reads that are not built either ({', '.join(missing)})" if missing else ""
        )
        raise LookupError(
            f"stage {stage!r} has no finished output for {config_path} (key {keys[stage]}); build it{needs} "
            f"with:\n  {build_command(config_path, DAG, [stage], missing)}"
        )
    folder = out.folder(top_level_only=True)  # on a remote workspace: its reports, fetched
    report = folder / "report.md"
    body = report.read_text() if report.is_file() else (folder / "report.json").read_text()
    outputs = "\n".join(f"  {name}: {value}" for name, value in out.outputs.items())
    return f"{body.rstrip()}\n\nstage {stage}, key {out.key}\ndata: {out.path}\noutputs:\n{outputs}"
