"""The flow's bookkeeping, kept out of the flow so that the flow reads as the DAG and nothing else.

`StageRunner` runs one stage at a time honouring `--only` / `--force`, reads Prefect's Cached state,
logs each stage to the pipeline's MLflow run and writes `<workspace>/runs/<run-id>/summary.json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline_config import PipelineConfig
from tasks import tracking
from tasks.stage import MissingInputError, StageOutput, cached_output, hash_json, read_report, write_json

STAGES = ("scrape", "synthesize", "clean", "tokenize", "train", "evaluate", "register")


def check_stage_names(names: Iterable[str], option: str) -> list[str]:
    names = list(names or [])
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"{option}: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}")
    return names


def with_downstream(names: Iterable[str]) -> set[str]:
    """Forcing a stage forces everything after it: their inputs are being rebuilt."""
    first = min((STAGES.index(n) for n in names), default=len(STAGES))
    return set(STAGES[first:])


class StageRunner:
    def __init__(
        self,
        cfg: PipelineConfig,
        config_path: str,
        only: list[str] | None,
        force: list[str] | None,
        flow_run_id: str,
    ):
        self.cfg, self.config_path = cfg, config_path
        self.only = set(check_stage_names(only, "--only"))
        self.forced = with_downstream(check_stage_names(force, "--force"))
        self.flow_run_id = flow_run_id
        self.run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{flow_run_id[:8]}"
        self.outputs: dict[str, StageOutput] = {}
        self.resolved = cfg.model_dump(mode="json")
        self.config_hash = hash_json(self.resolved)
        self.mlflow_run_id = tracking.start_run(
            self.resolved,
            run_name=self.run_id,
            tags={"config_path": config_path, "config_hash": self.config_hash, "profile": cfg.name},
        )

    def __call__(self, module: ModuleType, inputs: Mapping[str, StageOutput | None]) -> StageOutput | None:
        spec, task = module.SPEC, module.TASK
        if self.only and STAGES.index(spec.name) > max(STAGES.index(n) for n in self.only):
            return None  # --only: nothing after the last named stage runs
        if self.only and spec.name not in self.only:
            out = self._from_cache(spec, inputs)
        else:
            force = spec.name in self.forced
            missing = cached_output(self.cfg.workspace_path(), spec.name, spec.key(self.cfg, inputs)) is None
            state = task.with_options(refresh_cache=force or missing)(
                self.cfg,
                dict(inputs),
                force=force,
                context={"mlflow_run_id": self.mlflow_run_id},
                return_state=True,
            )
            out = state.result()  # re-raises the stage's error
            if state.name == "Cached":
                out = replace(out, status="cached", seconds=0.0)
        self.outputs[spec.name] = out
        tracking.log_stage(
            self.mlflow_run_id,
            spec.name,
            out.key,
            out.status,
            {**read_report(out), "rows_in": out.rows_in, "rows_out": out.rows_out, "seconds": out.seconds},
            Path(out.path),
        )
        return out

    def _from_cache(self, spec, inputs: Mapping[str, StageOutput]) -> StageOutput:
        key = spec.key(self.cfg, inputs)
        out = cached_output(self.cfg.workspace_path(), spec.name, key)
        if out is None:
            raise MissingInputError(
                f"--only needs the output of stage '{spec.name}' (key {key}), never built with this "
                f"config; run it first: finetune run --config {self.config_path} --only {spec.name}"
            )
        return out

    def finish(self, error: BaseException | None = None) -> dict[str, Any]:
        summary = {
            "run_id": self.run_id,
            "prefect_flow_run_id": self.flow_run_id,
            "config_path": str(self.config_path),
            "config_hash": self.config_hash,
            "profile": self.cfg.name,
            "status": "failed" if error else "completed",
            "error": f"{type(error).__name__}: {error}" if error else None,
            "stages": {
                name: {k: v for k, v in asdict(o).items() if k != "stage"} for name, o in self.outputs.items()
            },
            "mlflow": self._mlflow_record(),
        }
        tracking.end_run(self.mlflow_run_id, "FAILED" if error else "FINISHED")
        out_dir = self.cfg.workspace_path() / "runs" / self.run_id
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "summary.json", summary)
        summary["summary_path"] = str(out_dir / "summary.json")
        return summary

    def _mlflow_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"tracking_uri": tracking.tracking_uri(), "run_id": self.mlflow_run_id}
        registered = self.outputs.get("register")
        if registered:
            reg = read_report(registered)
            version = tracking.client().get_model_version(reg["model_name"], reg["version"])
            record.update(
                model_name=reg["model_name"],
                version=reg["version"],
                aliases=sorted(version.aliases),
                registered_by_run=reg["run_id"],
            )
        return record


def format_table(summary: Mapping[str, Any]) -> str:
    rows = [("stage", "key", "status", "rows in", "rows out", "seconds")]
    for name, s in summary["stages"].items():
        rows.append(
            (name, s["key"], s["status"], str(s["rows_in"]), str(s["rows_out"]), f"{s['seconds']:.1f}")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
