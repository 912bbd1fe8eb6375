"""Stage evaluate: the base model and the fine-tuned one on the held-out test split.

Metrics per system: ROUGE-1/2/L/Lsum and exact match of greedy generations against the reference
responses, each with a bootstrap interval (`ci`), and perplexity on the reference tokens; systems: the
fine-tuned model, the base model and the "echo the prompt's input" baseline, on the same rows. Output:
`predictions.jsonl` (prompt, reference, every system's output) and report.json with `finetuned`, `base`,
`echo_input`, `delta`, `delta_vs_echo` and the `eval_set_key`; manifest outputs `metrics` (the fine-tuned
model's means, which the registry gate reads) and `eval_set_key`.

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
        cfg.seed,
    )
    report = {"eval_set_key": inputs["tokenize"].output("eval_set_key"), **report}
    metrics = {k: v for k, v in report["finetuned"].items() if k != "ci"}
    outputs = {"predictions": "predictions.jsonl", "metrics": metrics, "eval_set_key": report["eval_set_key"]}
    return StageResult(report, outputs)


SPEC = StageSpec(
    "evaluate",
    run,
    "tasks.evaluation",
    sections=("evaluate", "seed"),
    libraries=("torch", "transformers", "tokenizers", "peft", "datasets", "evaluate", "rouge-score"),
)
TASK = stage_task(SPEC)
