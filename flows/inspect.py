"""`finetune runs` and `finetune show STAGE`: what the workspace holds, without starting Prefect or MLflow.

Runs are read from `<workspace>/runs/*/summary.json` (each run writes one, failed runs included); a stage
is found by the key the config gives it now, so `show` prints exactly what the next run would reuse.
"""

from __future__ import annotations

from pathlib import Path

from tasks.common.io import glob, join, read_json, workspace_location

STATUS_MARK = {"executed": "run", "cached": "cached"}


def list_runs(workspace: Path | str, limit: int = 10) -> str:
    """`workspace`: a folder or an fsspec URL (tasks/common/io.py)."""
    summaries = list(reversed(glob(workspace, "runs/*/summary.json")))[:limit]
    if not summaries:
        return f"no runs in {join(workspace, 'runs')}"
    lines = []
    for path in summaries:
        s = read_json(path)
        stages = " ".join(f"{n}:{STATUS_MARK.get(o['status'], o['status'])}" for n, o in s["stages"].items())
        line = f"{s['run_id']}  {s.get('profile', '?'):<10} {s['status']:<9} {stages}"
        if s.get("failed_stage"):
            line += f"  FAILED at {s['failed_stage']}: {s.get('error', '')[:120]}"
        mlflow = s.get("mlflow") or {}
        if "version" in mlflow:
            line += f"  -> v{mlflow['version']} {'promoted' if mlflow.get('promoted') else 'not promoted'}"
        lines.append(line)
    return "\n".join(lines)


def show_stage(cfg, config_path: str, stage: str) -> str:
    """A stage's report and the path of its data under the config's current key; raises LookupError."""
    from flows.finetune import DAG
    from flows.runner import plan, usable

    keys = plan(cfg, DAG, config_path=config_path).keys
    spec = next(module.SPEC for module, _ in DAG if module.SPEC.name == stage)
    out = usable(spec, workspace_location(cfg), keys[stage])
    if out is None:
        raise LookupError(
            f"stage {stage!r} has no finished output for {config_path} (key {keys[stage]}); build it with:\n"
            f"  finetune run --config {config_path} --only {stage}"
        )
    folder = out.folder(top_level_only=True)  # on a remote workspace: its reports, fetched
    report = folder / "report.md"
    body = report.read_text() if report.is_file() else (folder / "report.json").read_text()
    outputs = "\n".join(f"  {name}: {value}" for name, value in out.outputs.items())
    return f"{body.rstrip()}\n\nstage {stage}, key {out.key}\ndata: {out.path}\noutputs:\n{outputs}"
