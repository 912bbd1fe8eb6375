"""What clean did, for people: report.md (the stage's Prefect artifact) and rejections.jsonl (one row per
reason with sample rows: a Prefect table artifact and an MLflow table). Every dropped row itself is in
rejected.jsonl, with its reason and detail."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tasks.common.io import write_jsonl

SAMPLE_CHARS = 160
POLICIES = {
    "same_task": "same_task (the same code up to names is a duplicate only when the instruction and input "
    "are near-identical too, names canonicalised)",
    "same_code": "same_code (the same code up to names is a duplicate whatever the instructions say)",
    "off": "off",
}


def _snippet(row: dict) -> str:
    if "raw" in row:  # a quarantined line
        text = f"line {row['line']}: {row['raw']}"
    else:
        text = f"{row.get('id')}: {row.get('instruction', '')} => {row.get('output', '')}"
    text = " ".join(text.split())
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"


def rejection_summary(dropped: dict, rejected: list[dict], samples: int) -> list[dict]:
    by_reason = defaultdict(list)
    for row in rejected:
        if len(by_reason[row["reason"]]) < samples:
            by_reason[row["reason"]].append(row)
    return [
        {
            "reason": reason,
            "dropped": n,
            # one text cell: Prefect and MLflow tables show scalars
            "samples": "\n".join(
                _snippet(r) + (f"  [{json.dumps(r['detail'])}]" if r.get("detail") else "")
                for r in by_reason[reason]
            ),
        }
        for reason, n in dropped.items()
    ]


def _decontamination(report: dict, rejected: list[dict], samples: int) -> list[str]:
    """Per rule and benchmark, the rows dropped, and samples with the item and the span they matched."""
    found = report.get("decontamination")
    if not found:
        return []
    lines = ["", "Decontamination (n-grams and phrases common in this corpus are ignored as idioms):"]
    for who, index in found.items():
        lines.append(
            f"- {who.replace('_', ' ')}: {index['items']} items, {index['ngrams']} n-grams "
            f"({index['common_ngrams_ignored']} common, ignored), "
            f"{index['common_substrings_ignored']} common substrings ignored"
        )
    by_rule = defaultdict(list)
    for row in rejected:
        if row.get("reason", "").startswith("contaminated_"):
            by_rule[(row["reason"], row["detail"]["benchmark"])].append(row)
    for (reason, benchmark), rows in sorted(by_rule.items()):
        lines.append(f"- {reason} against {benchmark}: {len(rows)} rows")
        for row in rows[:samples]:
            d = row["detail"]
            span = d["span"].replace("|", "\\|")
            shared = f", {d['shared_ngrams']} of {d['item_ngrams']} n-grams" if "shared_ngrams" in d else ""
            lines.append(f'  - {row["id"]} matches {d["item"]}{shared}: "{span}"')
    return lines


def write_report(
    out_dir: Path, report: dict, rejected: list[dict], redacted: list[dict], samples: int
) -> None:
    summary = rejection_summary(report["dropped"], rejected, samples)
    write_jsonl(out_dir / "rejections.jsonl", summary)
    lines = [
        "# clean",
        "",
        f"{report['rows_in']} rows in, {report['rows_out']} kept, "
        f"{report['rows_in'] - report['rows_out']} dropped (every one in rejected.jsonl with its reason).",
        "",
        "| reason | dropped | example |",
        "|---|---:|---|",
    ]
    for entry in summary:
        example = entry["samples"].split("\n", 1)[0].replace("|", "\\|")
        lines.append(f"| {entry['reason']} | {entry['dropped']} | {example} |")
    lines += _decontamination(report, rejected, samples)
    if policy := report.get("structural_dedup_policy"):
        lines += ["", f"Structural dedup policy: {POLICIES.get(policy, policy)}."]
    r = report["redacted"]
    lines += [
        "",
        f"PII redacted (rows kept, values replaced): {r['rows']} rows; {r['email']} emails, "
        f"{r['ip_address']} IP addresses, {r['secret']} keys or tokens.",
    ]
    if redacted:
        lines.append("Examples: " + ", ".join(f"{s['id']} {s['redacted']}" for s in redacted))
    if near := report.get("near_dedup"):
        lines += [
            "",
            f"Near-dup: MinHash LSH with {near['bands']} bands of {near['rows_per_band']} rows; "
            f"{near['candidates_checked']} candidate pairs checked by exact Jaccard.",
        ]
    lines += ["", f"Kept by source: {report['kept_by_source']}.", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
