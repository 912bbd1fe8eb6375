"""Stage 3, clean: length bounds, a parse check and exact dedup over the synthesized instruction pairs.

Input: synthesize's `pairs.jsonl` (`id, instruction, input, output, source, metadata`). Output: the kept
pairs in `pairs.jsonl` (same schema) and every dropped pair in `rejected.jsonl` with an added `reason`.

As in datatrove, each filter is a small predicate `record -> (keep, reason)`; one loop applies them in
order, stops at the first rejection, counts the reasons and writes the rejected rows. Dedup is stateful and
runs last, so that only rows every other filter kept enter its seen-set: a duplicate of a rejected row is
then not lost.

Run alone: `finetune run --config pipeline_config/offline.yaml --only clean`.
"""

from __future__ import annotations

import ast
import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pipeline_config import PipelineConfig
from pipeline_config.schema import CleanConfig
from tasks.stage import StageOutput, StageSpec, file_version, iter_jsonl, stage_task, write_jsonl

Filter = Callable[[dict], tuple[bool, str | None]]

# every reason is always reported, zero included, so reports of different configs line up
REASONS = (
    "instruction_too_short",
    "instruction_too_long",
    "output_too_short",
    "output_too_long",
    "code_does_not_parse",
    "duplicate",
)
FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)


def _text(record: Mapping, field: str) -> str:
    return record.get(field) or ""


def length_filter(field: str, min_chars: int, max_chars: int) -> Filter:
    """Keep rows whose `field` has between `min_chars` and `max_chars` characters, both included."""

    def check(record: dict) -> tuple[bool, str | None]:
        n = len(_text(record, field))
        if n < min_chars:
            return False, f"{field}_too_short"
        if n > max_chars:
            return False, f"{field}_too_long"
        return True, None

    return check


def output_code(output: str) -> str:
    """The code in a response: its first ``` fenced block when it has one, else the whole text."""
    fenced = FENCED.search(output)
    return fenced[1] if fenced else output


def parses(code: str) -> bool:
    with warnings.catch_warnings():  # invalid escape sequences only warn; the code still parses
        warnings.simplefilter("ignore")
        try:
            ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: null bytes
            return False
    return True


def parse_filter(record: dict) -> tuple[bool, str | None]:
    return (True, None) if parses(output_code(_text(record, "output"))) else (False, "code_does_not_parse")


def dedup_key(record: Mapping) -> str:
    """Hash of instruction, input and output with whitespace runs collapsed; case is meaningful in code."""
    parts = (" ".join(_text(record, f).split()) for f in ("instruction", "input", "output"))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()  # \x00: field boundaries count


def exact_dedup_filter() -> Filter:
    """Keep the first row of each dedup key; the seen-set lives in the closure, one per run."""
    seen: set[str] = set()

    def check(record: dict) -> tuple[bool, str | None]:
        key = dedup_key(record)
        if key in seen:
            return False, "duplicate"
        seen.add(key)
        return True, None

    return check


def build_filters(cfg: CleanConfig) -> list[Filter]:
    filters = [
        length_filter("instruction", cfg.min_instruction_chars, cfg.max_instruction_chars),
        length_filter("output", cfg.min_output_chars, cfg.max_output_chars),
    ]
    if cfg.require_parse:
        filters.append(parse_filter)
    if cfg.exact_dedup:
        filters.append(exact_dedup_filter())  # last: only rows that passed everything else are remembered
    return filters


def apply_filters(rows: Iterable[dict], filters: list[Filter]) -> tuple[list[dict], list[dict]]:
    """(kept, rejected); a rejected row is the input row plus the `reason` of the first filter that failed."""
    kept: list[dict] = []
    rejected: list[dict] = []
    for row in rows:
        for check in filters:
            keep, reason = check(row)
            if not keep:
                rejected.append({**row, "reason": reason})
                break
        else:
            kept.append(row)
    return kept, rejected


def clean_pairs(in_dir: Path, out_dir: Path, cfg: CleanConfig) -> dict:
    """Filter `in_dir/pairs.jsonl` into `out_dir/pairs.jsonl` and `out_dir/rejected.jsonl`; report counts."""
    rows = list(iter_jsonl(Path(in_dir) / "pairs.jsonl"))
    kept, rejected = apply_filters(rows, build_filters(cfg))
    written = write_jsonl(Path(out_dir) / "pairs.jsonl", kept)
    write_jsonl(Path(out_dir) / "rejected.jsonl", rejected)
    reasons = Counter(r["reason"] for r in rejected)
    return {
        "rows_in": len(rows),
        "rows_out": written,
        "dropped": {reason: reasons.get(reason, 0) for reason in REASONS},
        "kept_by_source": dict(Counter(r.get("source", "unknown") for r in kept)),
    }


# --- Prefect wrapper ------------------------------------------------------------------------------------


def run(cfg: PipelineConfig, inputs: Mapping[str, StageOutput], out_dir: Path, context: Mapping) -> dict:
    return clean_pairs(Path(inputs["synthesize"].path), out_dir, cfg.clean)


SPEC = StageSpec("clean", run, ("clean",), file_version(__file__))
TASK = stage_task(SPEC)
