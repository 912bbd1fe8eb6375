"""The synthesize stage's report.md: what each generator asked, what survived each filter and the sandbox,
and what the teacher cost. Published as a Prefect markdown artifact and logged to MLflow like every stage's
report.md (flows/stage_tasks.publish_artifacts, flows/tracking.ARTIFACTS)."""

from __future__ import annotations

from pathlib import Path

from tasks.synthesize.pairs import TEACHER_MODES

TEACHER_FIELDS = (
    "prompts",
    "cache_hits",
    "requests",
    "retries",
    "failed",
    "skipped",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
    "stopped",
)


def write_report_md(out_dir: Path, report: dict) -> Path:
    by_source = ", ".join(f"{source} {n}" for source, n in sorted(report["by_source"].items())) or "none"
    lines = [
        "# synthesize",
        f"{report['rows_out']} pairs from {report['rows_in']} scraped records ({by_source}).",
        "",
        "| generator | prompts | replies | unparseable | truncated | tasks | rejected | verified | kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode in TEACHER_MODES:
        m = report.get(mode) or {}
        if not m.get("enabled"):
            lines.append(f"| {mode} | off | | | | | | | |")
            continue
        rejected = ", ".join(f"{reason} {n}" for reason, n in m["rejected"].items() if n) or "0"
        check = m.get("verification")
        verified = f"{check['passed']}/{check['checked']}" if check else "off"
        lines.append(
            f"| {mode} | {m['prompts']} | {m['generated']} | {m['unparseable']} | {m['truncated']} | "
            f"{m['parsed']} | {rejected} | {verified} | {m['kept']} |"
        )
    failures = {
        f"{mode}: {kind}": n
        for mode in TEACHER_MODES
        for kind, n in (((report.get(mode) or {}).get("verification") or {}).get("failures") or {}).items()
        if n
    }
    if failures:
        lines += ["", "Sandbox failures: " + ", ".join(f"{k} {v}" for k, v in failures.items()) + "."]
    if box := report.get("sandbox"):
        lines += ["", f"Sandbox `{box['backend']}`: {box['isolation']}."]
    if teacher := report.get("teacher"):
        shown = ", ".join(f"{k} {teacher[k]}" for k in TEACHER_FIELDS if teacher.get(k) is not None)
        lines += ["", f"Teacher `{teacher.get('backend')}` / `{teacher.get('model')}`: {shown}."]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
