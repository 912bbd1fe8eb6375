"""All generators of the synthesize stage, into one `pairs.jsonl`, with counts per generator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline_config.schema import SynthesizeConfig
from tasks.common.io import iter_jsonl, write_jsonl
from tasks.common.teacher import Teacher
from tasks.synthesize.docstring_pairs import docstring_pairs
from tasks.synthesize.self_instruct import self_instruct


def synthesize_pairs(
    records_path: Path, out_dir: Path, cfg: SynthesizeConfig, teacher: Teacher | None, seed: int
) -> dict:
    records = list(iter_jsonl(records_path))
    rows = list(docstring_pairs(records, cfg.max_docstring_pairs)) if cfg.docstring_pairs else []
    counts: Counter = Counter()
    if cfg.self_instruct.enabled:
        generated, counts = self_instruct(teacher, cfg.self_instruct, seed)
        rows += generated
    written = write_jsonl(out_dir / "pairs.jsonl", rows)
    return {
        "rows_in": len(records),
        "rows_out": written,
        "by_source": dict(Counter(r["source"] for r in rows)),
        "self_instruct": {k: counts.get(k, 0) for k in ("generated", "unparseable", "too_similar", "kept")},
        "teacher": cfg.teacher.backend if cfg.self_instruct.enabled else None,
    }
