"""The stage contract shared by every stage: content-addressed keys, atomic output folders, manifests.

A stage writes `<workspace>/stages/<stage>/<key>/` holding its data, `report.json` and, written last,
`manifest.json`. A folder without a manifest is an unfinished write and is never read. Work happens in a
hidden temporary folder beside the final one and is renamed into place only when it is complete, so a
failing stage leaves nothing that a later run could mistake for finished.

`stage_task` wraps a stage's `run` function into the Prefect task that the flow calls; its Prefect cache
key is the stage key, so the Prefect UI and the filesystem agree about what is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_config import PipelineConfig


@dataclass(frozen=True)
class StageOutput:
    """What a stage hands to the next one: a path and a few numbers, never data in memory."""

    stage: str
    key: str
    path: str
    rows_in: int
    rows_out: int
    status: str  # "executed" | "cached"
    seconds: float


class MissingInputError(RuntimeError):
    """A stage was asked to run from cached inputs that were never produced."""


def logger() -> logging.Logger:
    """Prefect's run logger inside a task or flow (shows in the UI), a plain logger elsewhere (tests)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("finetune")


def hash_json(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_version(*paths: str | Path) -> str:
    """A stage's code version: the hash of its source file(s), so editing the code invalidates its cache."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()[:12]


def stage_key(stage: str, config: Mapping[str, Any], input_keys: Mapping[str, str], code_version: str) -> str:
    return hash_json({"stage": stage, "config": config, "inputs": dict(input_keys), "code": code_version})


def stage_dir(workspace: Path, stage: str, key: str) -> Path:
    return Path(workspace) / "stages" / stage / key


def read_manifest(folder: Path) -> dict | None:
    manifest = Path(folder) / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.is_file() else None


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")  # insertion order: stages in DAG order


def cached_output(workspace: Path, stage: str, key: str) -> StageOutput | None:
    folder = stage_dir(workspace, stage, key)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    return StageOutput(stage, key, str(folder), manifest["rows_in"], manifest["rows_out"], "cached", 0.0)


def build_stage(
    workspace: Path,
    stage: str,
    key: str,
    input_keys: Mapping[str, str],
    work: Callable[[Path], dict],
    force: bool = False,
) -> StageOutput:
    """Run `work(tmp_dir) -> report` unless a finished output exists; publish the folder atomically.

    The report must hold `rows_in` and `rows_out`. With `force`, an existing output is rebuilt and replaced.
    """
    if not force and (hit := cached_output(workspace, stage, key)):
        return hit
    final = stage_dir(workspace, stage, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        report = work(tmp)
        seconds = round(time.perf_counter() - start, 3)
        report = {**report, "seconds": seconds}
        write_json(tmp / "report.json", report)
        manifest = {
            "stage": stage,
            "key": key,
            "inputs": dict(input_keys),
            "rows_in": int(report["rows_in"]),
            "rows_out": int(report["rows_out"]),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(tmp / "manifest.json", manifest)
        if not force and (hit := cached_output(workspace, stage, key)):
            shutil.rmtree(tmp)  # a concurrent run of the same stage published first: same key, same content
            return hit
        if final.exists():  # forced rebuild, or an unfinished folder: move it aside so the swap is a rename
            trash = final.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StageOutput(stage, key, str(final), manifest["rows_in"], manifest["rows_out"], "executed", seconds)


def iter_jsonl(path: Path):
    with open(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: Path, rows) -> int:
    n = 0
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_report(output: StageOutput) -> dict:
    return json.loads((Path(output.path) / "report.json").read_text())


# --- Prefect wrapper ------------------------------------------------------------------------------------

# run(cfg, inputs, out_dir, context) -> report; context carries run-scoped values that are not part of the
# key (the pipeline's MLflow run id), so that they never invalidate the cache.
StageRun = Callable[[PipelineConfig, Mapping[str, StageOutput], Path, Mapping[str, Any]], dict]


@dataclass(frozen=True)
class StageSpec:
    """How the flow runs a stage: its core adapter, the config sections and inputs that form its key."""

    name: str
    run: StageRun
    sections: tuple[str, ...]
    code_version: str
    extra_key: Callable[[], dict] | None = None  # environment facts that change the output (tracking URI)

    def key(self, cfg: PipelineConfig, inputs: Mapping[str, StageOutput]) -> str:
        dumped = cfg.model_dump(mode="json")
        config = {s: dumped[s] for s in self.sections}
        if self.extra_key:
            config["extra"] = self.extra_key()
        return stage_key(self.name, config, {n: o.key for n, o in inputs.items()}, self.code_version)


def stage_task(spec: StageSpec, retries: int = 0, retry_delay_seconds: float = 10):
    """The Prefect task for a stage; its cache key is the stage key.

    The flow calls it with `refresh_cache=True` (task.with_options) when the stage is forced or its folder
    is gone, so that a Prefect record never shadows a deleted output.
    """
    from prefect import task

    def cache_key(_context, params: dict) -> str:
        cfg = params["cfg"]
        # the Prefect result store is shared by every workspace on the machine; keep workspaces apart
        return f"{spec.key(cfg, params['inputs'])}-{hash_json(str(cfg.workspace_path()))[:8]}"

    @task(
        name=spec.name,
        task_run_name=spec.name,
        cache_key_fn=cache_key,
        persist_result=True,
        retries=retries,
        retry_delay_seconds=retry_delay_seconds,
    )
    def run_stage(
        cfg: PipelineConfig, inputs: dict[str, StageOutput], force: bool = False, context: dict | None = None
    ) -> StageOutput:
        key = spec.key(cfg, inputs)
        input_keys = {n: o.key for n, o in inputs.items()}
        work = lambda out: spec.run(cfg, inputs, out, context or {})  # noqa: E731
        return build_stage(cfg.workspace_path(), spec.name, key, input_keys, work, force)

    return run_stage
