"""Log the fine-tuned model to MLflow with the transformers flavor, register a version, apply the gate.

Every new version gets the alias `challenger`; whether it also takes `champion` is gate.py's paired
decision, recorded with its numbers and reason as version tags (`gate.*`) and in registration.json. The
version's description carries the base model's card (name, licence, parameters, origin).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline_config.schema import EvaluateConfig, RegisterConfig
from tasks.common import tracking
from tasks.common.generation import generate
from tasks.common.io import iter_jsonl, write_json, write_jsonl
from tasks.common.models import load_tokenizer
from tasks.common.versions import library_versions
from tasks.evaluation.metrics import per_example_scores
from tasks.registration.gate import decide

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


def current_champion(client, model_name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None


def scores_from_predictions(path: Path, system: str, metric: str) -> dict[str, float]:
    return {r["id"]: r["scores"][system][metric] for r in iter_jsonl(path)}


def champion_scores(
    champion, rows: list[dict], metric: str, eval_set_key: str, evaluate: EvaluateConfig, cache: Path
):
    """The champion's per-example scores on this evaluation set.

    Scored on this very set before: read from its run's predictions. Otherwise it is scored again here,
    greedily as evaluation does, and its outputs are cached by model version and evaluation-set key.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if champion.tags.get("eval_set_key") == eval_set_key:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=champion.run_id, artifact_path="stages/evaluate/predictions.jsonl"
            )
            return scores_from_predictions(Path(path), "finetuned", metric)
        except (MlflowException, OSError, KeyError):
            pass  # its run or its artifacts are gone: score it again below
    cached = cache / f"{champion.name}-v{champion.version}-{eval_set_key}.jsonl"
    if not cached.is_file():
        components = mlflow.transformers.load_model(
            f"models:/{champion.name}/{champion.version}", return_type="components"
        )
        tokenizer = components["tokenizer"]
        tokenizer.padding_side = tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = components["model"].eval()
        outputs = generate(
            model, tokenizer, [r["prompt"] for r in rows], evaluate.max_new_tokens, evaluate.batch_size
        )
        cached.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(
            cached, ({"id": r["id"], "output": o.strip()} for r, o in zip(rows, outputs, strict=True))
        )
    outputs = {r["id"]: r["output"] for r in iter_jsonl(cached)}
    per = per_example_scores([outputs[r["id"]] for r in rows], [r["reference"] for r in rows])
    return {r["id"]: per[metric][i] for i, r in enumerate(rows)}


def register_model(
    model_dir: Path,
    predictions: Path,
    metrics: Mapping,
    out_dir: Path,
    run_id: str,
    base: Mapping,
    is_adapter: bool,
    cfg: RegisterConfig,
    evaluate: EvaluateConfig,
    eval_set_key: str,
    cache: Path,
    seed: int = 0,
) -> dict:
    """`base`: the base_model stage's outputs (model_dir, card, hub_id for hub models); `predictions`: the
    evaluate stage's per-example outputs and scores; `cache`: where re-scored champions' outputs are kept."""
    client = tracking.client()
    metric = cfg.gate_metric
    rows = list(iter_jsonl(predictions))
    champion = current_champion(client, cfg.model_name)
    their = champion_scores(champion, rows, metric, eval_set_key, evaluate, cache) if champion else None
    info = log_model(model_dir, base, is_adapter, run_id, cfg.model_name)
    version = str(info.registered_model_version)
    client.update_model_version(cfg.model_name, version, description(base.get("card", {}), metrics, metric))
    tags = {f"metric.{name}": value for name, value in metrics.items()}
    tags |= {"pipeline_run_id": run_id, "eval_set_key": eval_set_key}  # scores compare on one set only
    decision = decide(
        scores_from_predictions(predictions, "finetuned", metric),
        scores_from_predictions(predictions, "base", metric),
        their,
        metric,
        cfg.min_improvement,
        str(champion.version) if champion else None,
        seed,
    )
    tags |= {"gate.promoted": decision.promote, "gate.reason": decision.reason}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, str(value))
    client.set_registered_model_alias(cfg.model_name, "challenger", version)
    if decision.promote:
        client.set_registered_model_alias(cfg.model_name, "champion", version)
    record = {
        "tracking_uri": tracking.tracking_uri(),
        "run_id": run_id,
        "model_name": cfg.model_name,
        "version": version,
        "model_uri": info.model_uri,
        "aliases": sorted(client.get_model_version(cfg.model_name, version).aliases),
        "promoted": decision.promote,
        "gate": decision.record(),
    }
    write_json(out_dir / "registration.json", record)
    return {"rows_in": 1, "rows_out": 1, **record}
