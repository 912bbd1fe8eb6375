"""Stage register: log the fine-tuned model to MLflow, register a version, apply the champion gate.

The version carries the template, the evaluation's generation settings, the resolved config, the stage
keys, the evaluation-set and benchmark keys, the git commit and a model card (README.md, also written to
this stage's folder). A cached register output is trusted only while its version still exists in the
registry: a wiped MLflow store with a kept workspace registers again instead of pointing at nothing.

Run alone: `finetune run --config pipeline_config/offline.yaml --only register`.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline_config.redact import public_dump
from tasks.common import mlflow_store
from tasks.common.io import hash_json, workspace_location, workspace_path
from tasks.common.stage import (
    StageContext,
    StageOutput,
    StageResult,
    StageSpec,
    cached_output,
    read_report,
)
from tasks.common.templates import PromptTemplate
from tasks.common.versions import git_commit
from tasks.registration.card import model_card
from tasks.registration.registry import Candidate, register_model


def stage_reports(cfg, stage_keys: dict) -> dict:
    """The reports of this config's stages that are in the workspace (the card's data provenance)."""
    found = {name: cached_output(workspace_location(cfg), name, key) for name, key in stage_keys.items()}
    return {name: read_report(out) for name, out in found.items() if out is not None}


def version_key(cfg, inputs, context: StageContext) -> str:
    """What names this model's version in the registry: the register key without the tracking URI. The URI
    is in the stage key so that another store registers the model again; but it names a way to a store,
    not the model (`sqlite:///.../mlflow.db` and a tracking server serving that file are one store), so a
    store that holds this model already gives back its version whatever URI reached it. A retry or a re-run
    after a crash reuses it too; a forced rebuild (--force) asks for a new version, once per pipeline run."""
    key = replace(SPEC, environment=None).key(cfg, {name: out.key for name, out in inputs.items()})
    return f"{key}-forced-{context.mlflow_run_id}" if context.forced else key


def run(cfg, inputs, out_dir, context: StageContext) -> StageResult:
    if context.mlflow_run_id is None:  # the flow opens it; the model is logged into it
        raise ValueError(
            "stage register logs the model into the pipeline's MLflow run: run it through the flow, "
            "`finetune run --config CONFIG --only register`"
        )
    base, train, evaluated = inputs["base_model"], inputs["train"], inputs["evaluate"]
    config = public_dump(cfg)  # no password of a URL in the registry
    stage_keys = {k: v for k, v in context.stage_keys.items() if k != "register"}
    stage_keys |= {name: out.key for name, out in inputs.items()}  # what this run really read
    lineage = {
        "stage_keys": stage_keys,
        "benchmark_keys": evaluated.outputs.get("benchmark_keys", {}),
        "git_commit": git_commit(),
        "config_hash": hash_json(config),
    }
    reports = {
        **stage_reports(cfg, stage_keys),
        "train": read_report(train),
        "evaluate": read_report(evaluated),
    }
    # which sandbox ran generated code for this model's data and scores: "none" must be visible here
    lineage["sandbox"] = {
        name: r["sandbox"]["backend"] for name, r in reports.items() if r and "sandbox" in r
    }
    model_dir = train.file("model_dir")
    candidate = Candidate(
        model_dir=model_dir,
        base={**base.outputs, "model_dir": str(base.file("model_dir"))},
        suites={name: evaluated.folder() / f for name, f in evaluated.output("suite_files").items()},
        metrics=evaluated.output("metrics"),
        eval_set_key=evaluated.output("eval_set_key"),
        generation=evaluated.output("generation"),
        lineage=lineage,
        config=config,
        card=model_card(
            cfg.register.model_name,
            base.outputs.get("card", {}),
            reports,
            config,
            PromptTemplate.load(model_dir),
            lineage,
        ),
        version_key=version_key(cfg, inputs, context),
        adapter_dir=train.file("adapter_dir") if train.outputs.get("adapter_dir") else None,
        training=reports["train"],
    )
    report = register_model(
        candidate,
        out_dir,
        context.mlflow_run_id,
        cfg.register,
        workspace_path(cfg) / "cache" / "champion_outputs",
        cfg.evaluate.batch_size,
        cfg.seed,
    )
    return StageResult(report, {k: report[k] for k in ("model_name", "version", "model_uri", "tracking_uri")})


def still_registered(output: StageOutput) -> bool:
    return mlflow_store.version_exists(output.outputs.get("model_name"), output.outputs.get("version"))


SPEC = StageSpec(
    "register",
    run,
    "tasks.registration",
    sections=("register", "evaluate", "seed"),  # evaluate: how a champion from another set is re-scored
    libraries=("mlflow",),
    # a different tracking store has not seen this model: registering there is new work
    environment=lambda cfg: {"tracking_uri": mlflow_store.tracking_uri()},
    is_valid=still_registered,
    retries=2,  # an unreachable registry (RegistryUnavailable) is worth another attempt
)
