"""Stage tokenize: prompt templates, loss masking, FIM, packing and a seeded train/test split.

Input: the cleaned `pairs.jsonl` and the base model's tokenizer. Output: `dataset/`
(datasets.save_to_disk) with `train` and `test` splits holding `input_ids`, `attention_mask` and `labels`
(-100 on prompt tokens when masking), plus the `prompt`, `input` and `response` text that evaluation
generates from and compares against; and `prompt_template.json`, the template, which travels on with the
model (manifest output `template`). The test split holds out whole sources (tasks/common/splits.py) in a
seeded random order; its content hash `eval_set_key` is an output, recorded with every score.

Run alone: `finetune run --config pipeline_config/offline.yaml --only tokenize`.
"""

from __future__ import annotations

from tasks.common.stage import StageResult, StageSpec
from tasks.common.templates import TEMPLATE_FILE
from tasks.tokenization.encode import tokenize_pairs


def run(cfg, inputs, out_dir, context) -> StageResult:
    model_dir = inputs["base_model"].file("model_dir")
    pairs = inputs["clean"].file("pairs")
    report = tokenize_pairs(pairs, out_dir, model_dir, cfg.tokenize, cfg.split, cfg.seed)
    outputs = {
        "dataset_dir": "dataset",
        "template": TEMPLATE_FILE,
        "eval_set_key": report["eval_set_key"],
    }
    return StageResult(report, outputs)


SPEC = StageSpec(
    "tokenize",
    run,
    "tasks.tokenization",
    sections=("tokenize", "split", "seed"),
    libraries=("transformers", "tokenizers", "datasets"),
)
