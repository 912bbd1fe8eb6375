"""Stage evaluate: the base model and the fine-tuned one on the held-out test split.

Metrics per model: ROUGE-1/2/L/Lsum of greedy generations against the reference responses and perplexity
on the reference response tokens. Output: `predictions.jsonl` (prompt, reference, both models'
generations) and report.json with `base`, `finetuned` and `delta`; manifest output `metrics` (the
fine-tuned model's numbers, which the registry gate reads).

Run alone: `finetune run --config pipeline_config/offline.yaml --only evaluate`.
"""

from __future__ import annotations

from tasks.common.prefect import stage_task
from tasks.common.stage import StageResult, StageSpec
from tasks.evaluation.compare import evaluate_models


def run(cfg, inputs, out_dir, context) -> StageResult:
    train = inputs["train"]
    report = evaluate_models(
        inputs["tokenize"].file("dataset_dir"),
        train.file("model_dir"),
        out_dir,
        inputs["base_model"].file("model_dir"),
        train.output("adapter"),
        cfg.evaluate,
        cfg.model.trust_remote_code,
    )
    return StageResult(report, {"predictions": "predictions.jsonl", "metrics": report["finetuned"]})


SPEC = StageSpec(
    "evaluate",
    run,
    "tasks.evaluation",
    sections=("evaluate",),
    libraries=("torch", "transformers", "tokenizers", "peft", "datasets", "evaluate", "rouge-score"),
)
TASK = stage_task(SPEC)
