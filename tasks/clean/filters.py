"""The clean stage's filters: length bounds, a parse check and exact dedup, on tasks.common.filtering.

Dedup is stateful and runs last, so that only rows every other filter kept enter its seen-set: a duplicate
of a rejected row is then not lost.
"""

from __future__ import annotations

import ast
import hashlib
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pipeline_config.schema import CleanConfig
from tasks.common.filtering import Filter, apply_filters
from tasks.common.io import iter_jsonl, write_jsonl

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

    return Filter(f"{field}_length", (f"{field}_too_short", f"{field}_too_long"), check)


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


def _parse_check(record: dict) -> tuple[bool, str | None]:
    return (True, None) if parses(output_code(_text(record, "output"))) else (False, "code_does_not_parse")


parse_filter = Filter("parse", ("code_does_not_parse",), _parse_check)


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

    return Filter("exact_dedup", ("duplicate",), check)


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


def clean_pairs(pairs_path: Path, out_dir: Path, cfg: CleanConfig) -> dict:
    """Filter a pairs JSONL into `out_dir/pairs.jsonl` and `out_dir/rejected.jsonl`; report counts."""
    rows = list(iter_jsonl(pairs_path))
    result = apply_filters(rows, build_filters(cfg))
    written = write_jsonl(Path(out_dir) / "pairs.jsonl", result.kept)
    write_jsonl(Path(out_dir) / "rejected.jsonl", result.rejected)
    return {
        "rows_in": len(rows),
        "rows_out": written,
        "dropped": dict(result.counts),
        "kept_by_source": dict(Counter(r.get("source", "unknown") for r in result.kept)),
    }
