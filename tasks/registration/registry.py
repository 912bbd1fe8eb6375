"""Log the fine-tuned model to MLflow with the transformers flavor, register a version, apply the gate.

Every new version gets the alias `challenger`. It also takes `champion` when no champion exists or when
it beats the champion's gate metric (`register.gate_metric`) by more than `register.min_improvement`.
The version's description carries the base model's card (name, licence, parameters, origin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline_config.schema import RegisterConfig
from tasks.common import tracking
from tasks.common.io import write_json
from tasks.common.models import load_tokenizer
from tasks.common.versions import library_versions
from tasks.registration.gate import beats, champion_metric

SERVING_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "safetensors")


def pip_requirements() -> list[str]:
    """The serving environment pinned to what trained and evaluated the model (inference would crash on
    a missing torchvision if MLflow inferred them)."""
    return [f"{name}=={version}" for name, version in library_versions(SERVING_LIBRARIES).items()]


def log_model(model_dir: Path, base: Mapping, is_adapter: bool, run_id: str, model_name: str):
    """Log with the transformers flavor and register a new version.

    An adapter on a hub base is logged alone and names its base id. An adapter on any other base (a GGUF
    or scratch model lives in the workspace, which may be cleaned) is merged into it first, so the
    registered model loads on its own.
    """
    import mlflow
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model_dir)
    hub_id = base.get("hub_id")
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base["model_dir"]), str(model_dir)
        )
        if not hub_id:
            model = model.merge_and_unload()
            is_adapter = False
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    with mlflow.start_run(run_id=run_id):
        return mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            pip_requirements=pip_requirements(),
            registered_model_name=model_name,
            base_model_path=hub_id if is_adapter else None,
        )


def description(card: Mapping, metrics: Mapping, gate_metric: str) -> str:
    facts = ", ".join(f"{k}: {card[k]}" for k in ("name", "license", "parameters", "origin") if card.get(k))
    return f"Fine-tuned from {facts}. {gate_metric} = {metrics.get(gate_metric)}."


def register_model(
    model_dir: Path,
    metrics: Mapping,
    out_dir: Path,
    run_id: str,
    base: Mapping,
    is_adapter: bool,
    cfg: RegisterConfig,
    eval_set_key: str | None = None,
) -> dict:
    """`base`: the base_model stage's outputs (model_dir, card, hub_id for hub models)."""
    client = tracking.client()
    info = log_model(model_dir, base, is_adapter, run_id, cfg.model_name)
    version = str(info.registered_model_version)
    finetuned = metrics
    client.update_model_version(
        cfg.model_name, version, description(base.get("card", {}), metrics, cfg.gate_metric)
    )
    for name, value in finetuned.items():
        client.set_model_version_tag(cfg.model_name, version, f"metric.{name}", str(value))
    client.set_model_version_tag(cfg.model_name, version, "pipeline_run_id", run_id)
    if eval_set_key:  # scores only compare on the same evaluation set
        client.set_model_version_tag(cfg.model_name, version, "eval_set_key", eval_set_key)
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
