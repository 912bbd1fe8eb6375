"""Reading the pairs file without losing anything: a malformed line or a row of the wrong shape is
quarantined (into rejected.jsonl, with its line number and what is wrong) and the rest is processed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tasks.common.chat import conversation_problem

log = logging.getLogger(__name__)

REQUIRED = ("id", "instruction", "output")  # strings; `input` may be missing (Alpaca data omits it)
OPTIONAL_TEXT = ("input", "source")
QUARANTINE_REASONS = ("malformed_json", "bad_schema")
LOGGED = 10  # bad lines named in the log; all of them are in rejected.jsonl


def schema_problem(row: object) -> str | None:
    """What is wrong with a parsed line, or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for name in REQUIRED:
        if name not in row:
            return f"missing field {name!r}"
        if not isinstance(row[name], str):
            return f"field {name!r} is a {type(row[name]).__name__}, not a string"
    for name in OPTIONAL_TEXT:
        if row.get(name) is not None and not isinstance(row[name], str):
            return f"field {name!r} is a {type(row[name]).__name__}, not a string"
    if row.get("metadata") is not None and not isinstance(row["metadata"], dict):
        return f"field 'metadata' is a {type(row['metadata']).__name__}, not an object"
    if row.get("messages") is not None and (problem := conversation_problem(row["messages"])):
        return f"field 'messages' {problem}"
    return None


def read_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """(rows, quarantined): rows normalised (`input` and `source` as strings, `metadata` a dict)."""
    rows, quarantined = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:  # a bad byte spoils one row, not the file
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # a cut string is "unterminated", not a bad \\n
            except json.JSONDecodeError as exc:
                quarantined.append(_quarantine(path, line_no, line, "malformed_json", str(exc)))
                continue
            if problem := schema_problem(row):
                quarantined.append(_quarantine(path, line_no, line, "bad_schema", problem))
                continue
            row["input"] = row.get("input") or ""
            row["source"] = row.get("source") or "unknown"
            row["metadata"] = row.get("metadata") or {}
            rows.append(row)
    for bad in quarantined[:LOGGED]:
        log.warning(
            "%s:%d: %s (%s); quarantined in rejected.jsonl",
            path,
            bad["line"],
            bad["reason"],
            bad["detail"]["error"],
        )
    if len(quarantined) > LOGGED:
        log.warning("%s: %d more bad lines, all in rejected.jsonl", path, len(quarantined) - LOGGED)
    return rows, quarantined


def _quarantine(path: Path, line_no: int, line: str, reason: str, problem: str) -> dict:
    return {"line": line_no, "raw": line.rstrip("\n")[:2000], "reason": reason, "detail": {"error": problem}}
