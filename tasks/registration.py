"""Stage 7, register: log the fine-tuned model to MLflow, register a version, apply the champion gate.

Every new version gets the alias `challenger`. It also takes `champion` when no champion exists or when
it beats the champion's gate metric (`register.gate_metric`, read from the champion version's tags) by
more than `register.min_improvement`. Metrics are stored as version tags so that the gate never depends
on a run that may have been deleted.

Run alone: `finetune run --config pipeline_config/offline.yaml --only register`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline_config import PipelineConfig
from pipeline_config.schema import RegisterConfig
from tasks import tracking
from tasks.stage import StageOutput, StageSpec, file_version, read_report, stage_task, write_json

LOWER_IS_BETTER = {"perplexity"}
PIP_REQUIREMENTS = ["torch", "transformers", "peft", "accelerate", "tokenizers"]


def beats(candidate: float, champion: float | None, metric: str, min_improvement: float) -> bool:
    """The gate: does the challenger's metric beat the champion's by more than `min_improvement`?"""
    if champion is None:
        return True
    if metric in LOWER_IS_BETTER:
        return champion - candidate > min_improvement
    return candidate - champion > min_improvement


def champion_metric(client, model_name: str, metric: str) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None, None
    value = version.tags.get(f"metric.{metric}")
    return str(version.version), float(value) if value is not None else None


def log_model(model_dir: Path, base_model: str, is_adapter: bool, run_id: str, model_name: str):
    """Log with the transformers flavor and register a new version.

    An adapter on a hub base is logged alone and names its base. An adapter on a local base (the offline
    scratch model lives in the workspace, which may be cleaned) is merged into it first, so the registered
    model loads on its own.
    """
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model), str(model_dir))
        if Path(base_model).is_dir():
            model = model.merge_and_unload()
            is_adapter = False
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    with mlflow.start_run(run_id=run_id):
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            pip_requirements=PIP_REQUIREMENTS,  # inferring them crashes on a missing torchvision
            registered_model_name=model_name,
            base_model_path=base_model if is_adapter else None,
        )


def register_model(
    train_dir: Path,
    eval_report: Mapping,
    out_dir: Path,
    run_id: str,
    base_model: str,
    is_adapter: bool,
    cfg: RegisterConfig,
) -> dict:
    client = tracking.client()
    info = log_model(train_dir / "model", base_model, is_adapter, run_id, cfg.model_name)
    version = str(info.registered_model_version)
    finetuned = eval_report["finetuned"]
    for name, value in finetuned.items():
        client.set_model_version_tag(cfg.model_name, version, f"metric.{name}", str(value))
    client.set_model_version_tag(cfg.model_name, version, "pipeline_run_id", run_id)
    champion_version, champion_value = champion_metric(client, cfg.model_name, cfg.gate_metric)
    candidate = finetuned[cfg.gate_metric]
    promoted = beats(candidate, champion_value, cfg.gate_metric, cfg.min_improvement)
    client.set_registered_model_alias(cfg.model_name, "challenger", version)
    if promoted:
        client.set_registered_model_alias(cfg.model_name, "champion", version)
    aliases = sorted(client.get_model_version(cfg.model_name, version).aliases)
    record = {
        "tracking_uri": tracking.tracking_uri(),
        "run_id": run_id,
        "model_name": cfg.model_name,
        "version": version,
        "model_uri": info.model_uri,
        "aliases": aliases,
        "promoted": promoted,
        "gate_metric": cfg.gate_metric,
        "candidate_value": candidate,
        "previous_champion": champion_version,
        "previous_champion_value": champion_value,
    }
    write_json(out_dir / "registration.json", record)
    return {"rows_in": 1, "rows_out": 1, **record}


def run(cfg: PipelineConfig, inputs: Mapping[str, StageOutput], out_dir: Path, context: Mapping) -> dict:
    train_report = read_report(inputs["train"])
    return register_model(
        Path(inputs["train"].path),
        read_report(inputs["evaluate"]),
        out_dir,
        context["mlflow_run_id"],
        train_report["base_model"],
        train_report["adapter"],
        cfg.register,
    )


# a different tracking store has not seen this model: registering there is new work, so it is in the key
SPEC = StageSpec(
    "register", run, ("register",), file_version(__file__), extra_key=lambda: {"uri": tracking.tracking_uri()}
)
TASK = stage_task(SPEC)
