"""The stage contract shared by every stage: content-addressed keys, atomic publication, manifests.

A stage writes `<workspace>/stages/<stage>/<key>/` holding its data, `report.json` (for people) and, written
last, `manifest.json`, whose `outputs` block is the stage's interface: what later stages may read (a model
folder, a template name), checked when they read it. A folder without a manifest is never read.

Publication. A stage runs into a private version folder that one atomic switch under a per-key lock
publishes as `<key>` (tasks/common/publish.py), so two runs that build the same key never fail and a
forced rebuild never leaves the key missing; `remove_stale` later sweeps the versions that lost the key.

A remote workspace (an fsspec URL: tasks/common/io.py) has no symlinks and no shared flock: the stage
still runs into a local scratch folder, which is uploaded as a version, and a pointer object
`stages/<stage>/<key>.json` takes the symlink's place (tasks/common/remote.py); inputs are read from a
copy downloaded once into this machine's cache (`StageOutput.folder`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from pipeline_config import PipelineConfig
from tasks.common import remote
from tasks.common.io import (
    hash_json,
    is_file,
    is_remote,
    join,
    local_cache,
    read_json,
    workspace_location,
    write_json,
)
from tasks.common.publish import SUPERSEDED_GRACE_S, key_lock, private_name, sweep, switch, writer_alive
from tasks.common.versions import code_version, library_versions


class MissingInputError(RuntimeError):
    """A stage was asked to run from cached inputs that were never produced."""


class MissingOutputError(RuntimeError):
    """A stage read an output field that the producing stage's manifest does not hold."""


class StageResult(NamedTuple):
    """What a stage's `run` returns: the report (for people) and the outputs (for later stages)."""

    report: dict
    outputs: dict


@dataclass(frozen=True, kw_only=True)
class StageOutput:
    """What a stage hands to the next one: where its folder is, a few numbers and its manifest outputs."""

    stage: str
    key: str
    path: str  # the resolved version folder (a URL on a remote workspace): stable while the key is switched
    rows_in: int
    rows_out: int
    status: str  # "executed" | "cached"
    seconds: float
    outputs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(
        cls,
        manifest: Mapping[str, Any],
        *,
        stage: str,
        key: str,
        path: str,
        status: str = "cached",
        seconds: float = 0.0,
    ) -> StageOutput:
        """The record of the published folder `path` of `stage` under `key`, read from its manifest."""
        return cls(
            stage=stage,
            key=key,
            path=path,
            rows_in=manifest["rows_in"],
            rows_out=manifest["rows_out"],
            status=status,
            seconds=seconds,
            outputs=manifest.get("outputs", {}),
        )

    def output(self, name: str) -> Any:
        if name not in self.outputs:
            raise MissingOutputError(
                f"stage '{self.stage}' (key {self.key}) has no output '{name}' in {self.path}/manifest.json "
                f"(it has: {', '.join(sorted(self.outputs)) or 'none'}); rebuild it with --force {self.stage}"
            )
        return self.outputs[name]

    def file(self, name: str) -> Path:
        """An output that names a file or folder inside the stage folder, as a local path."""
        return self.folder() / self.output(name)

    def folder(self, top_level_only: bool = False) -> Path:
        """The stage folder on this machine: itself on a local workspace; on a remote one, a copy in the
        local cache, fetched once per version (`top_level_only`: just the reports, tables and plots)."""
        if not is_remote(self.path):
            return Path(self.path)
        return remote.fetch(self.path, private_name(self.key), top_level_only)


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """What a stage's `run` is given beside its config and inputs: run-scoped values that are not part of
    its key, so that they never invalidate the cache."""

    mlflow_run_id: str | None = None  # the pipeline's MLflow run: register logs the model into it
    # the keys of every stage of this config: what a registered version records as its lineage
    stage_keys: Mapping[str, str] = field(default_factory=dict)
    forced: bool = False  # --force asked for this stage to be rebuilt
    resume_dir: Path | None = None  # set by `StageSpec.build`: see `resume_dir`


def stage_key(stage: str, config: Mapping[str, Any], input_keys: Mapping[str, str], code: str) -> str:
    return hash_json({"stage": stage, "config": config, "inputs": dict(input_keys), "code": code})


def stage_dir(workspace: Path, stage: str, key: str) -> Path:
    return Path(workspace) / "stages" / stage / key


def read_manifest(folder: Path | str) -> dict | None:
    manifest = join(folder, "manifest.json")
    return read_json(manifest) if is_file(manifest) else None


def read_report(output: StageOutput) -> dict:
    return read_json(join(output.path, "report.json"))


def cached_output(workspace: Path | str, stage: str, key: str) -> StageOutput | None:
    folder = (
        remote.resolve(workspace, stage, key) if is_remote(workspace) else stage_dir(workspace, stage, key)
    )
    manifest = read_manifest(folder) if folder else None
    if manifest is None:
        return None
    path = folder if is_remote(workspace) else str(folder.resolve())
    return StageOutput.from_manifest(manifest, stage=stage, key=key, path=path)


def _produce(
    version: Path, stage: str, key: str, input_keys: Mapping[str, str], work: Callable[[Path], StageResult]
) -> tuple[dict, float]:
    """Run `work` into `version`, then write report.json and, last, manifest.json."""
    start = time.perf_counter()
    report, outputs = work(version)
    seconds = round(time.perf_counter() - start, 3)
    report = {**report, "seconds": seconds}
    write_json(version / "report.json", report)
    manifest = {
        "stage": stage,
        "key": key,
        "inputs": dict(input_keys),
        "rows_in": int(report["rows_in"]),
        "rows_out": int(report["rows_out"]),
        "outputs": outputs,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(version / "manifest.json", manifest)
    return manifest, seconds


def build_stage(
    workspace: Path | str,
    stage: str,
    key: str,
    input_keys: Mapping[str, str],
    work: Callable[[Path], StageResult],
    force: bool = False,
    is_valid: Callable[[StageOutput], bool] | None = None,
) -> StageOutput:
    """Run `work(folder) -> StageResult` unless a finished (and still valid) output exists; publish it.

    The report must hold `rows_in` and `rows_out`. With `force`, an existing output is rebuilt and replaced.
    `is_valid` checks a cached output against the world outside the workspace (a registry entry).
    """

    def usable_hit() -> StageOutput | None:
        hit = cached_output(workspace, stage, key)
        return hit if hit and (is_valid is None or is_valid(hit)) else None

    if not force and (hit := usable_hit()):
        return hit
    if is_remote(workspace):
        return _build_remote(workspace, stage, key, input_keys, work, force)

    def waiting() -> None:
        from tasks.common.runtime import logger  # lazily: worker processes import this module Prefect-free

        # on the screen and in the UI: a run queued behind another's long training must not look hung
        logger().warning("stage %s: another run is building key %s; waiting to reuse its output", stage, key)

    # Held while the stage runs, not only while it publishes: a second run of the same config waits for
    # the first and reuses its output instead of computing (and paying for) the same thing twice.
    with key_lock(workspace, stage, key, waiting):
        if not force and (hit := usable_hit()):
            return hit
        parent = stage_dir(workspace, stage, key).parent
        parent.mkdir(parents=True, exist_ok=True)
        version = parent / private_name(key)
        version.mkdir()
        try:
            manifest, seconds = _produce(version, stage, key, input_keys, work)
            switch(stage_dir(workspace, stage, key), version)
            shutil.rmtree(resume_dir(workspace, stage, key), ignore_errors=True)  # done: nothing to resume
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
    return StageOutput.from_manifest(
        manifest, stage=stage, key=key, path=str(version.resolve()), status="executed", seconds=seconds
    )


def _build_remote(
    workspace: str,
    stage: str,
    key: str,
    input_keys: Mapping[str, str],
    work: Callable[[Path], StageResult],
    force: bool,
) -> StageOutput:
    """Build in a local scratch folder, then upload it and point the key at it (tasks/common/remote.py)."""
    scratch = local_cache(workspace) / "build" / stage / private_name(key)
    scratch.mkdir(parents=True)
    try:
        manifest, seconds = _produce(scratch, stage, key, input_keys, work)
        version = remote.publish(workspace, stage, key, scratch, force)
        if version is None:  # another worker published this key while we built it: equivalent, reuse it
            shutil.rmtree(scratch)
            if hit := cached_output(workspace, stage, key):
                return hit
            raise RuntimeError(f"stage {stage}: the pointer of key {key} names no finished version")
        shutil.rmtree(resume_dir(workspace, stage, key), ignore_errors=True)  # done: nothing to resume
        remote.keep_local(workspace, stage, scratch)
    except BaseException:
        # an upload cut short has no pointer: a later remove_stale deletes it (once its writer is gone)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return StageOutput.from_manifest(
        manifest, stage=stage, key=key, path=version, status="executed", seconds=seconds
    )


def resume_dir(workspace: Path | str, stage: str, key: str) -> Path:
    """Where a long stage keeps what lets a killed attempt resume (training checkpoints): one folder per
    key that outlives the attempt, unlike its version folder, and is removed once the key is published.
    On a remote workspace it stays on this machine (in the local cache): only a retry here resumes."""
    if is_remote(workspace):
        return local_cache(workspace) / "resume" / stage / key
    return stage_dir(workspace, stage, key).parent / f".resume-{key}"


def remove_stale(workspace: Path | str, now: float | None = None) -> list[str]:
    """Delete what killed or finished runs left behind, locally or remotely; return the removed paths (for
    the log). A superseded version stays for SUPERSEDED_GRACE_S: a run may still be reading it."""
    now = time.time() if now is None else now
    if is_remote(workspace):
        return remote.remove_stale(workspace, now, SUPERSEDED_GRACE_S, writer_alive)
    return sweep(Path(workspace), now)


# --- how the flow sees a stage ----------------------------------------------------------------------------

# run(cfg, inputs, out_dir, context) -> StageResult
StageRun = Callable[[PipelineConfig, Mapping[str, StageOutput], Path, StageContext], StageResult]


@dataclass(frozen=True)
class StageSpec:
    """A stage as the flow runs it: its `run` adapter and everything that forms its key.

    key = hash(stage name, its config `sections`, the keys of the inputs it `uses`, its code version, the
    versions of the `libraries` its output depends on, and `environment(cfg)`: the content hashes of path
    inputs named in the config and other facts outside the config, such as the tracking store).
    """

    name: str
    run: StageRun
    package: str  # the stage's package: its files and the project modules it imports are its code version
    sections: tuple[str, ...]
    libraries: tuple[str, ...] = ()
    environment: Callable[[PipelineConfig], dict] | None = None
    uses: Callable[[PipelineConfig], tuple[str, ...]] | None = None  # None: every input it is given
    is_valid: Callable[[StageOutput], bool] | None = None  # a cached output still holds outside the workspace
    retries: int = 0
    # the scarce things it occupies while it runs ("gpu", "teacher", "sandbox"): Prefect global
    # concurrency limits of these names, where the server has them, queue stages across flow runs
    resources: Callable[[PipelineConfig], tuple[str, ...]] | None = None

    @cached_property
    def code_version(self) -> str:
        return code_version(self.package)

    def used_inputs(self, cfg: PipelineConfig, inputs: Mapping[str, Any]) -> dict[str, Any]:
        wanted = self.uses(cfg) if self.uses else tuple(inputs)
        return {name: inputs[name] for name in wanted if name in inputs}

    def key(self, cfg: PipelineConfig, input_keys: Mapping[str, str]) -> str:
        dumped = cfg.model_dump(mode="json")
        config: dict[str, Any] = {s: dumped[s] for s in self.sections}
        if self.libraries:
            config["libraries"] = library_versions(self.libraries)
        if self.environment:
            config["environment"] = self.environment(cfg)
        return stage_key(self.name, config, self.used_inputs(cfg, input_keys), self.code_version)

    def build(
        self,
        cfg: PipelineConfig,
        inputs: Mapping[str, StageOutput],
        force: bool = False,
        context: StageContext | None = None,
    ) -> StageOutput:
        """Run the stage (or find its output) on the stage contract; what the Prefect task calls."""
        used = self.used_inputs(cfg, inputs)
        input_keys = {n: o.key for n, o in used.items()}
        key = self.key(cfg, input_keys)

        workspace = workspace_location(cfg)

        def work(out: Path) -> StageResult:
            resume = resume_dir(workspace, self.name, key)
            return self.run(cfg, used, out, replace(context or StageContext(), resume_dir=resume))

        return build_stage(workspace, self.name, key, input_keys, work, force, self.is_valid)
