"""Stage register: log the fine-tuned model to MLflow, register a version, apply the champion gate.

A cached register output is trusted only while its version still exists in the registry: a wiped MLflow
store with a kept workspace registers again instead of pointing at nothing.

Run alone: `finetune run --config pipeline_config/offline.yaml --only register`.
"""

from __future__ import annotations

from tasks.common import tracking
from tasks.common.io import workspace_path
from tasks.common.prefect import stage_task
from tasks.common.stage import StageOutput, StageResult, StageSpec
from tasks.registration.registry import register_model


def run(cfg, inputs, out_dir, context) -> StageResult:
    base, train = inputs["base_model"], inputs["train"]
    base_facts = {**base.outputs, "model_dir": str(base.file("model_dir"))}
    evaluated = inputs["evaluate"]
    report = register_model(
        train.file("model_dir"),
        evaluated.file("predictions"),
        evaluated.output("metrics"),
        out_dir,
        context["mlflow_run_id"],
        base_facts,
        train.output("adapter"),
        cfg.register,
        cfg.evaluate,
        evaluated.output("eval_set_key"),
        workspace_path(cfg) / "cache" / "champion_outputs",
        cfg.seed,
    )
    return StageResult(report, {k: report[k] for k in ("model_name", "version", "model_uri", "tracking_uri")})


def still_registered(output: StageOutput) -> bool:
    return tracking.version_exists(output.outputs.get("model_name"), output.outputs.get("version"))


SPEC = StageSpec(
    "register",
    run,
    "tasks.registration",
    sections=("register", "evaluate", "seed"),  # evaluate: how a champion from another set is re-scored
    libraries=("mlflow",),
    # a different tracking store has not seen this model: registering there is new work
    environment=lambda cfg: {"tracking_uri": tracking.tracking_uri()},
    is_valid=still_registered,
)
TASK = stage_task(SPEC)
