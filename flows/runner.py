"""The flow's bookkeeping, kept out of the flow so that the flow reads as the DAG and nothing else.

`plan` computes every stage's key before anything runs (keys are content addresses: config, code,
libraries and the inputs' keys, no data needed) and checks `--only` / `--force` against them, so a refused
run writes nothing. `StageRunner` takes the flow through its steps, in this order: `plan_stages`,
`remove_leftovers`, `open_mlflow_run` (which also marks what killed runs left RUNNING, in MLflow and in
Prefect: flows/flow_runs.py), then one call per stage of the DAG (it reads Prefect's Cached state, logs the
stage to the pipeline's MLflow run and publishes its Prefect artifacts), then `finish`, which writes
`<workspace>/runs/<run-id>/summary.json` and puts the end-of-run table in the flow run's log.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from flows import flow_runs, tracking
from flows.stage_tasks import publish_artifacts, publish_mlflow_links, reused_task, stage_task
from flows.summary import format_footer, format_table, headline
from pipeline_config import PipelineConfig, load_config
from pipeline_config.redact import public_dump
from tasks.common import sandbox
from tasks.common.io import glob, hash_json, join, read_json, workspace_location, write_json
from tasks.common.runtime import logger
from tasks.common.stage import (
    MissingInputError,
    StageContext,
    StageOutput,
    StageSpec,
    cached_output,
    read_report,
    remove_stale,
)

Dag = Sequence[tuple[ModuleType, tuple[str, ...]]]  # (stage module, the stages whose outputs it is given)


class UsageError(ValueError):
    """The command line asks for something this config cannot do; nothing has been written."""


def stage_names(dag: Dag) -> tuple[str, ...]:
    """The stages in the order the DAG runs them."""
    return tuple(module.SPEC.name for module, _ in dag)


def check_stage_names(names: Iterable[str] | None, option: str, stages: Sequence[str]) -> list[str]:
    names = list(names or [])
    unknown = [n for n in names if n not in stages]
    if unknown:
        raise UsageError(f"{option}: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(stages)}")
    return names


def usable(spec: StageSpec, workspace: Path | str, key: str) -> StageOutput | None:
    """The finished output of `spec` under `key`, if it is there and still valid outside the workspace."""
    hit = cached_output(workspace, spec.name, key)
    return hit if hit and (spec.is_valid is None or spec.is_valid(hit)) else None


@dataclass(frozen=True)
class Plan:
    keys: dict[str, str]  # every stage's key under this config
    run: tuple[str, ...]  # stages that run (as Prefect tasks; they may still be cache hits)
    reuse: tuple[str, ...]  # stages outside --only whose cached outputs feed the ones that run
    forced: frozenset[str]


def plan(cfg: PipelineConfig, dag: Dag, only=None, force=None, config_path: str = "") -> Plan:
    """Keys, and which stages run, are read from cache or are left out. Raises UsageError.

    --force STAGE rebuilds STAGE and every stage after it. With --only, forcing applies within the named
    stages: a forced stage that is not among them is refused (it would silently not be rebuilt).
    """
    stages = stage_names(dag)
    only, force = check_stage_names(only, "--only", stages), check_stage_names(force, "--force", stages)
    if only and (outside := [f for f in force if f not in only]):
        raise UsageError(
            f"--force {' '.join(outside)} is not among --only {' '.join(only)}: a forced stage must run; "
            f"add it to --only, or drop --only to rebuild it and everything after it"
        )
    specs = {module.SPEC.name: module.SPEC for module, _ in dag}
    needs = {module.SPEC.name: inputs for module, inputs in dag}
    keys: dict[str, str] = {}
    for name, spec in specs.items():
        keys[name] = spec.key(cfg, {n: keys[n] for n in needs[name]})
    first_forced = min((stages.index(f) for f in force), default=len(stages))
    forced = {s for s in stages[first_forced:] if not only or s in only}
    if not only:
        check_sandbox(cfg, specs, keys, tuple(specs), forced)
        return Plan(keys, tuple(specs), (), frozenset(forced))

    run = tuple(s for s in specs if s in only)
    reuse, missing = read_or_missing(cfg, dag, run, keys)
    if missing:
        raise UsageError(
            f"--only {' '.join(only)} needs the output of {', '.join(missing)}, never built with this "
            f"config; build them all at once with:\n  {build_command(config_path, dag, only, missing)}"
        )
    check_sandbox(cfg, specs, keys, run, forced)
    return Plan(keys, run, reuse, frozenset(forced))


def read_or_missing(
    cfg: PipelineConfig, dag: Dag, run: Sequence[str], keys: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stages outside `run` whose outputs the stages in `run` read, in DAG order: those found finished
    in the workspace, and those missing (with what they read in turn that is not there either)."""
    stages = stage_names(dag)
    specs = {module.SPEC.name: module.SPEC for module, _ in dag}
    needs = {module.SPEC.name: inputs for module, inputs in dag}
    workspace = workspace_location(cfg)
    reuse, missing = set(), set()
    wanted = [n for s in run for n in specs[s].used_inputs(cfg, dict.fromkeys(needs[s]))]
    while wanted:
        name = wanted.pop()
        if name in run or name in reuse or name in missing:
            continue
        if usable(specs[name], workspace, keys[name]):
            reuse.add(name)
        else:
            missing.add(name)  # it must be built, and so must whatever it reads that is not there
            wanted += [n for n in specs[name].used_inputs(cfg, dict.fromkeys(needs[name]))]
    return tuple(s for s in stages if s in reuse), tuple(s for s in stages if s in missing)


def build_command(config_path: str, dag: Dag, only: Sequence[str], missing: Sequence[str]) -> str:
    """The one command that builds `only` and the missing stages they read (and nothing after them)."""
    stages = stage_names(dag)
    last = max(stages.index(n) for n in only)
    build = [s for s in stages[: last + 1] if s in missing or s in only]
    return f"finetune run --config {config_path} --only {' '.join(build)}"


def check_sandbox(cfg: PipelineConfig, specs: Mapping[str, StageSpec], keys, run, forced) -> None:
    """Before anything runs: a stage that will execute generated code needs a sandbox this machine has, so
    a machine without one fails now, not after minutes of training. A stage found in the cache runs
    nothing; on Dask, synthesis verification runs (and checks) on the workers."""
    workspace = workspace_location(cfg)
    needing = [
        name
        for name in run
        if specs[name].resources
        and "sandbox" in specs[name].resources(cfg)
        and not (name == "synthesize" and cfg.executor.backend == "dask")
        and (name in forced or not usable(specs[name], workspace, keys[name]))
    ]
    if needing:
        try:
            sandbox.resolve(cfg.sandbox.backend)
        except sandbox.SandboxUnavailable as error:
            raise UsageError(f"{' and '.join(needing)} will run generated code, but {error}") from None


@dataclass(frozen=True, kw_only=True)
class StageLog:
    """A stage's entry in the pipeline's MLflow run, held back while no stage has executed yet; its fields
    are `tracking.log_stage`'s parameters, passed by name."""

    stage: str
    key: str
    status: str
    report: Mapping[str, Any]
    folder: Path  # its reports, tables and plots, on this machine


class StageRunner:
    """One pipeline run's state; the flow calls its steps in order (see the module docstring)."""

    def __init__(self, cfg: PipelineConfig, config_path: str, flow_run_id: str):
        self.cfg, self.config_path, self.flow_run_id = cfg, config_path, flow_run_id
        self.workspace = workspace_location(cfg)  # a folder, or an fsspec URL (tasks/common/io.py)
        self.started = datetime.now(UTC)
        self.run_id = f"{self.started:%Y%m%dT%H%M%SZ}-{flow_run_id[:8]}"
        self.resolved = public_dump(cfg)  # what MLflow shows: URL credentials redacted
        self.config_hash = hash_json(self.resolved)
        self.plan: Plan | None = None  # plan_stages
        self.mlflow_run_id: str | None = None  # open_mlflow_run
        self.mlflow_url: str | None = None  # its page, where the store is a tracking server
        self.mlflow_experiment_id: str | None = None
        self.outputs: dict[str, StageOutput] = {}
        # Cached stages are logged with their numbers once some stage executes; a run that executes
        # nothing is a no-op and records only tags (metrics copied from earlier runs would crowd the UI).
        self.executed_any = False
        self.unlogged: list[StageLog] = []
        self.current: str | None = None  # the stage running now: the one that failed, on failure

    def plan_stages(self, dag: Dag, only: list[str] | None, force: list[str] | None) -> Plan:
        """Every key, and which stages run; raises UsageError before anything is written."""
        self.plan = plan(self.cfg, dag, only, force, self.config_path)
        return self.plan

    def remove_leftovers(self) -> None:
        """What killed or finished runs left in the workspace (tasks/common/stage.py `remove_stale`)."""
        for path in remove_stale(self.workspace):
            logger().info("removed what an earlier run left behind: %s", path)

    def open_mlflow_run(self) -> str:
        """The pipeline's MLflow run, named after what this run produces (the last stage's key)."""
        if self.plan is None:
            raise RuntimeError("StageRunner.plan_stages comes before open_mlflow_run")
        last_key = self.plan.keys[self.plan.run[-1]]
        self.mlflow_run_id = tracking.start_run(
            self.resolved,
            run_name=f"{self.cfg.name} {self.started:%Y-%m-%d %H:%M} {last_key[:8]}",
            tags={
                "config_path": self.config_path,
                "config_hash": self.config_hash,
                "profile": self.cfg.name,
                "workspace_run_id": self.run_id,
                "prefect_flow_run_id": self.flow_run_id,
            },
            experiment=tracking.experiment_name(self.cfg.name),
        )
        self.mlflow_url = tracking.run_url(self.mlflow_run_id)
        self.mlflow_experiment_id = tracking.client().get_run(self.mlflow_run_id).info.experiment_id
        self.warn_about_other_runs()
        return self.mlflow_run_id

    def warn_about_other_runs(self) -> None:
        """After this run's MLflow run is open and its Prefect flow run labelled with its owner, so that of
        two runs started at the same instant the later to look sees the other (looking before, neither
        would). What killed runs left RUNNING in MLflow and in Prefect is marked so."""
        if self.flow_run_id != "local":
            flow_runs.claim(self.flow_run_id)
            for name in flow_runs.mark_crashed(current=self.flow_run_id):
                logger().warning("flow run %r was left RUNNING by a killed process: marked Crashed", name)
        ended, live = tracking.end_orphaned_runs()
        for run_id in ended:
            logger().warning("MLflow run %s was left RUNNING by a killed process: marked KILLED", run_id)
        for other in live:
            logger().warning(
                "another finetune run is active on this machine (pid %s, profile %s): the two share %d "
                "CPU cores and each will run much slower than alone",
                other.get("pid"),
                other.get("profile"),
                len(os.sched_getaffinity(0)),
            )

    def __call__(self, module: ModuleType, needs: tuple[str, ...]) -> StageOutput | None:
        if self.plan is None or self.mlflow_run_id is None:
            raise RuntimeError("StageRunner: plan_stages and open_mlflow_run come before the stages")
        spec, planned = module.SPEC, self.plan
        task = stage_task(spec)
        self.current = spec.name
        inputs = {n: self.outputs[n] for n in needs if n in self.outputs}
        if spec.name in planned.reuse:
            out = usable(spec, self.workspace, planned.keys[spec.name])
            if out is None:  # deleted between planning and now
                raise MissingInputError(
                    f"the cached output of stage '{spec.name}' disappeared during the run"
                )
            reused_task(spec.name)(out, return_state=True)  # the UI lists it, Cached
        elif spec.name in planned.run:
            out = self._run_task(spec, task, inputs)
        else:
            return None  # --only: neither run nor needed
        self.outputs[spec.name] = out
        report = {
            **read_report(out),
            "rows_in": out.rows_in,
            "rows_out": out.rows_out,
            "seconds": out.seconds,
        }
        small = out.folder(top_level_only=True)  # reports, tables, plots: on a remote workspace, fetched
        entry = StageLog(stage=spec.name, key=out.key, status=out.status, report=report, folder=small)
        if out.status == "executed" and not self.executed_any:
            self.executed_any = True
            for earlier in self.unlogged:
                self._log(earlier)
            self.unlogged = []
        if self.executed_any:
            self._log(entry)
        else:
            self.unlogged.append(entry)
        publish_artifacts(self.cfg.name, out, small, self.mlflow_url)
        return out

    def _log(self, entry: StageLog, numbers: bool = True) -> None:
        tracking.log_stage(run_id=self.mlflow_run_id, **vars(entry), numbers=numbers)

    def _run_task(self, spec: StageSpec, task, inputs: Mapping[str, StageOutput]) -> StageOutput:
        planned = self.plan
        force = spec.name in planned.forced
        hit = usable(spec, self.workspace, planned.keys[spec.name])
        state = task.with_options(refresh_cache=force or hit is None)(
            self.cfg,
            dict(inputs),
            force=force,
            context=StageContext(
                mlflow_run_id=self.mlflow_run_id, stage_keys=dict(planned.keys), forced=force
            ),
            return_state=True,
        )
        out = state.result()  # re-raises the stage's error
        if state.name == "Cached":  # Prefect's record may name a version another run has since replaced
            out = replace(hit or out, status="cached", seconds=0.0)
        return out

    def finish(self, error: BaseException | None = None) -> dict[str, Any]:
        finished = datetime.now(UTC)
        summary = {
            "run_id": self.run_id,
            "prefect_flow_run_id": self.flow_run_id,
            "config_path": str(self.config_path),
            "config_hash": self.config_hash,
            "profile": self.cfg.name,
            "status": "failed" if error else "completed",
            "error": f"{type(error).__name__}: {error}" if error else None,
            "failed_stage": self.current if error else None,
            "started": self.started.isoformat(),
            "finished": finished.isoformat(),
            "seconds": round((finished - self.started).total_seconds(), 1),
            "stages": {
                name: {
                    **{k: v for k, v in asdict(o).items() if k not in ("stage", "outputs")},
                    "headline": headline(o),
                }
                for name, o in self.outputs.items()
            },
            "mlflow": self._mlflow_record(),
        }
        publish_mlflow_links(self.cfg.name, summary["mlflow"])
        for entry in self.unlogged:  # nothing executed: tags only
            self._log(entry, numbers=False)
        if not error:
            tracking.set_tags(self.mlflow_run_id, {"noop": str(not self.executed_any).lower()})
        tracking.end_run(self.mlflow_run_id, "FAILED" if error else "FINISHED")
        target = join(self.workspace, "runs", self.run_id, "summary.json")
        if isinstance(target, Path):
            target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, summary)
        summary["summary_path"] = str(target)
        if self.flow_run_id != "local":  # the table the command line prints, in the run's log in the UI
            flow_runs.ui_logger().info("%s\n\n%s", format_table(summary), format_footer(summary))
        return summary

    def _mlflow_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "tracking_uri": tracking.tracking_uri(),
            "run_id": self.mlflow_run_id,
            "experiment": tracking.experiment_name(self.cfg.name),
            "run_url": self.mlflow_url,
            "experiment_id": self.mlflow_experiment_id,  # `finetune runs` links the run with it
        }
        registered = self.outputs.get("register")
        if registered:
            reg = read_report(registered)
            version = tracking.client().get_model_version(reg["model_name"], reg["version"])
            record.update(
                model_name=reg["model_name"],
                version=reg["version"],
                aliases=sorted(version.aliases),
                registered_by_run=reg["run_id"],
                promoted=reg["promoted"],
                gate_reason=reg["gate"]["reason"],
            )
        return record


def report_failure(flow, flow_run, state) -> None:
    """The flow's on_failure hook: which stage failed, why, and the command that resumes from there."""
    config_path = flow_run.parameters.get("config_path", "pipeline_config/offline.yaml")
    failed, error = None, state.message
    try:
        cfg = load_config(config_path)
        for path in reversed(glob(workspace_location(cfg), "runs/*/summary.json")):
            found = read_json(path)
            if found.get("prefect_flow_run_id") == str(flow_run.id):
                failed, error = found.get("failed_stage"), found.get("error") or error
                break
    except Exception as exc:  # the hook must still say what it knows
        error = f"{error} (and the run's summary could not be read: {exc})"
    from prefect.logging.loggers import flow_run_logger

    flow_run_logger(flow_run, flow).error(
        "stage %s failed: %s\nThe stages before it are finished and will be reused. Resume with:\n"
        "  finetune run --config %s\nor through the deployment:\n"
        "  prefect deployment run finetune/nightly -p config_path=%s",
        repr(failed) if failed else "(unknown)",
        error,
        config_path,
        config_path,
    )
