"""Stage train: supervised fine-tuning with TRL's SFTTrainer; LoRA, QLoRA or full fine-tuning.

Output: `model/` (the adapter, or the full weights, plus the tokenizer and the prompt template),
`log_history.json`, `loss.png`; manifest outputs `model_dir` and `adapter` (whether `model_dir` holds an
adapter for the base model).

Run alone: `finetune run --config pipeline_config/offline.yaml --only train`.
"""

from __future__ import annotations

from tasks.common.models import gpu_resource
from tasks.common.prefect import stage_task
from tasks.common.stage import StageResult, StageSpec
from tasks.training.recipe import train_model


def run(cfg, inputs, out_dir, context) -> StageResult:
    report = train_model(
        inputs["tokenize"].file("dataset_dir"),
        out_dir,
        inputs["base_model"].file("model_dir"),
        inputs["tokenize"].file("template"),
        cfg.train,
        cfg.seed,
        cfg.model.trust_remote_code,
        context.get("resume_dir"),
    )
    return StageResult(report, {"model_dir": "model", "adapter": cfg.train.method != "full"})


SPEC = StageSpec(
    "train",
    run,
    "tasks.training",
    sections=("train", "seed"),
    libraries=(
        "torch",
        "transformers",
        "tokenizers",
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "datasets",
    ),
    resources=lambda cfg: gpu_resource(cfg.train.device),
)
TASK = stage_task(SPEC)
