"""What clean did, for people: report.md (the stage's Prefect artifact) and rejections.jsonl (one row per
reason with sample rows: a Prefect table artifact and an MLflow table). Every dropped row itself is in
rejected.jsonl, with its reason and detail."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from tasks.common.io import write_jsonl

SAMPLE_CHARS = 160


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
