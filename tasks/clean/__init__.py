"""Stage clean: filters over the synthesized instruction pairs, with a reason for every dropped row.

Input: synthesize's `pairs.jsonl` (`id, instruction, input, output, source, metadata`). Output: the kept
pairs in `pairs.jsonl` (same schema) and every dropped pair in `rejected.jsonl` with an added `reason`.

Run alone: `finetune run --config pipeline_config/offline.yaml --only clean`.
"""

from __future__ import annotations

from tasks.clean.filters import clean_pairs
from tasks.common.prefect import stage_task
from tasks.common.stage import StageResult, StageSpec


def run(cfg, inputs, out_dir, context) -> StageResult:
    report = clean_pairs(inputs["synthesize"].file("pairs"), out_dir, cfg.clean)
    return StageResult(report, {"pairs": "pairs.jsonl", "rejected": "rejected.jsonl"})


SPEC = StageSpec("clean", run, "tasks.clean", sections=("clean",), libraries=("python",))
TASK = stage_task(SPEC)
