"""Stage datasets: the user's own instruction and chat datasets (hub ids, local files, save_to_disk
folders), mapped onto the pipeline's rows beside the synthesized pairs.

Input: none; the config's `datasets` list. Output: `pairs.jsonl` in synthesize's schema (`id, instruction,
input, output, source, metadata`, plus `messages` for chat records), every source's rows in config order,
`source` = `dataset:<name>`; `rejected.jsonl`, every record that could not be mapped, with its place (file
and line, or index) and reason. Clean then treats these rows exactly as the synthesized ones: PII, filters,
dedup across all sources, decontamination. The key holds each source's content (local files, a
save_to_disk folder) or the commit of its hub snapshot (tasks/dataset_sources/read.py).

Run alone: `finetune run --config PROFILE --only datasets`.
"""

from __future__ import annotations

from tasks.common.stage import StageResult, StageSpec
from tasks.dataset_sources import read
from tasks.dataset_sources.mix import build_mix


def run(cfg, inputs, out_dir, context) -> StageResult:
    report = build_mix(list(cfg.datasets), out_dir, cfg.seed)
    return StageResult(report, {"pairs": "pairs.jsonl", "rejected": "rejected.jsonl"})


def environment(cfg) -> dict:
    """Each source by what it reads: raises (a missing file, a hub dataset not cached offline) at plan
    time, before any stage runs."""
    return {"sources": [read.identity(source, i) for i, source in enumerate(cfg.datasets)]}


SPEC = StageSpec(
    "datasets",
    run,
    "tasks.dataset_sources",
    sections=("datasets", "seed"),
    libraries=("datasets", "pyarrow"),
    environment=environment,
)
