"""The scrape's counts, kept in one place, and report.md (the stage's Prefect artifact) written from them.

Every file or page either yields records, or is skipped by a rule (`skipped`: tests, vendored code,
generated files, size, max_files) or fails as bad input (`failed`: not UTF-8, binary, Python 2, syntax
errors, symlink loops; on the web: HTTP errors, timeouts, refusals); each counted per reason, with a few
example paths per failure reason so that a person can look.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tasks.scrape.extract import KINDS

EXAMPLES_PER_REASON = 20


def reason_key(text: str) -> str:
    """A counter name that is also a valid MLflow metric name (the runner logs report numbers as metrics)."""
    return re.sub(r"[^\w.:-]", "_", text)


@dataclass
class Tally:
    files: Counter = field(default_factory=Counter)  # seen, read, parsed
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    failed_examples: dict[str, list[str]] = field(default_factory=dict)
    definitions: Counter = field(default_factory=Counter)  # see extract.module_records
    warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason_key(reason)] += 1

    def fail(self, reason: str, where: str) -> None:
        reason = reason_key(reason)
        self.failed[reason] += 1
        examples = self.failed_examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(where)

    def merge(self, other: Tally) -> None:
        """Add `other`'s counts (a worker's, over files that come after this tally's): examples stay in
        file order, so the report is the same however the files were split between workers."""
        for name in ("files", "skipped", "failed", "definitions"):
            getattr(self, name).update(getattr(other, name))  # in place: a Counter may be shared
        for reason, examples in other.failed_examples.items():
            mine = self.failed_examples.setdefault(reason, [])
            mine.extend(examples[: EXAMPLES_PER_REASON - len(mine)])
        self.warnings.extend(other.warnings)

    def as_dict(self) -> dict:
        d = self.definitions
        return {
            "files": {
                "seen": self.files["seen"],
                "read": self.files["read"],
                "parsed": self.files["parsed"],
                "skipped": dict(sorted(self.skipped.items())),
                "failed": dict(sorted(self.failed.items())),
                "failed_examples": dict(sorted(self.failed_examples.items())),
            },
            "definitions": {
                "found": d["found"],
                "private_skipped": d["private_skipped"],
                "without_docstring": d["without_docstring"],
                "duplicate_name": d["duplicate_name"],
                "duplicate_id": d["duplicate_id"],
                "with_docstrings": d["extracted"],
                "with_doctests": d["with_doctests"],
                "docstring_unparsed": d["docstring_unparsed"],
                "by_kind": {k: d[f"kind:{k}"] for k in KINDS},
            },
            "warnings": self.warnings,
        }


def markdown(report: dict) -> str:
    """A short human summary of report.json."""
    files, defs = report["files"], report["definitions"]
    kinds = ", ".join(f"{k} {v}" for k, v in defs["by_kind"].items())
    lines = [
        f"# scrape: {report['rows_out']} records from {', '.join(report['sources'])}",
        "",
        f"Files seen {files['seen']}, read {files['read']}, parsed {files['parsed']}. "
        f"Definitions found {defs['found']}; with docstrings {defs['with_docstrings']} ({kinds}); "
        f"with doctests {defs['with_doctests']}.",
    ]
    tables = [("Skipped (rules)", files["skipped"]), ("Failed (bad input)", files["failed"])]
    if web := report.get("web"):
        tables += [("Pages skipped", web["pages"]["skipped"]), ("Pages failed", web["pages"]["failed"])]
    for title, counts in tables:
        if counts:
            lines += ["", f"| {title} | count |", "| --- | --- |"]
            lines += [f"| {reason} | {n} |" for reason, n in counts.items()]
    if web := report.get("web"):
        http, html = web["http"], web["html"]
        lines += [
            "",
            f"Web: {web['pages']['read']} pages, {http['requests']} requests, {http['cache_hits']} cache "
            f"hits, {http['not_modified']} not modified (304), {http['retries']} retries. HTML: "
            f"{html.get('code_blocks', 0)} code blocks ({html.get('code_blocks_not_python', 0)} not Python), "
            f"{html.get('malformed_html', 0)} malformed pages (extracted anyway).",
            "",
            "| status | responses |",
            "| --- | --- |",
            *(f"| {status} | {n} |" for status, n in http["by_status"].items()),
        ]
        if http["refused"]:
            lines += ["", "| refused | requests |", "| --- | --- |"]
            lines += [f"| {reason} | {n} |" for reason, n in http["refused"].items()]
    lines += [f"\nWarning: {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
