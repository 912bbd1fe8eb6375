"""All generators of the synthesize stage, into one `pairs.jsonl` (and what they rejected, with the reason,
into `rejected.jsonl`), with counts per generator and filter, verification pass rates and failure kinds.

Docstring pairs have no tests to run: they are marked `verified: null, verification: "unverified"`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline_config.schema import SynthesizeConfig
from tasks.common.io import iter_jsonl, write_jsonl
from tasks.common.teacher import Teacher
from tasks.synthesize.docstring_pairs import docstring_pairs
from tasks.synthesize.oss_instruct import oss_instruct
from tasks.synthesize.self_instruct import self_instruct
from tasks.synthesize.verify import summary

TEACHER_MODES = ("self_instruct", "oss_instruct")


class TooFewRecords(ValueError):
    """Fewer pairs than synthesize.min_records survived; the message says where the others went."""


def teacher_modes(cfg: SynthesizeConfig) -> list[str]:
    return [mode for mode in TEACHER_MODES if getattr(cfg, mode).enabled]


def synthesize_pairs(
    records_path: Path, out_dir: Path, cfg: SynthesizeConfig, teacher: Teacher | None, seed: int
) -> dict:
    records = list(iter_jsonl(records_path))
    rows = list(docstring_pairs(records, cfg.max_docstring_pairs)) if cfg.docstring_pairs else []
    rejected: list[dict] = []
    modes: dict[str, dict] = {}
    for mode in teacher_modes(cfg):
        if teacher is None:
            raise ValueError(f"synthesize.{mode} is enabled but no teacher was given")
        if mode == "self_instruct":
            kept, counts, filtered = self_instruct(teacher, cfg.self_instruct, cfg.verify, seed)
        else:
            kept, counts, filtered = oss_instruct(teacher, records, cfg.oss_instruct, cfg.verify, seed)
        rows += kept
        rejected += filtered.rejected
        modes[mode] = mode_report(counts, filtered, cfg)
    written = write_jsonl(out_dir / "pairs.jsonl", rows)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    report = {
        "rows_in": len(records),
        "rows_out": written,
        "by_source": dict(Counter(r["source"] for r in rows)),
        **{mode: modes.get(mode, {"enabled": False}) for mode in TEACHER_MODES},
        "verify": {"enabled": cfg.verify.enabled, "keep": cfg.verify.keep} if modes else None,
        "teacher": teacher_report(cfg, teacher) if modes else None,
    }
    if written < cfg.min_records:
        raise TooFewRecords(shortfall(report, cfg))
    return report


def teacher_report(cfg: SynthesizeConfig, teacher: Teacher) -> dict:
    """Which teacher and what it did: requests, retries, failures by kind, tokens, cache hits and the cap
    that stopped it, if one did (accounting.Accounting.stats). Never the URL: it may hold a password."""
    return {"backend": cfg.teacher.backend, "model": cfg.teacher.model, **teacher.stats()}


def mode_report(counts: Counter, filtered, cfg: SynthesizeConfig) -> dict:
    """Counts in pipeline order: prompts, completions, parsed, each filter's rejections, kept; the
    verification summary covers every task that ran in the sandbox, kept or not."""
    judged = [
        r["metadata"]["verification"]
        for r in filtered.kept + filtered.rejected
        if "verification" in r.get("metadata", {})
    ]
    return {
        "enabled": True,
        "prompts": counts["prompts"],
        "not_produced": counts["not_produced"],
        "generated": counts["generated"],  # replies
        "unparseable": counts["unparseable"],
        "truncated": counts["truncated"],  # a task the token limit cut off; the reply's others are kept
        "parsed": counts["parsed"],  # tasks: a reply may hold several
        "rejected": {reason: n for reason, n in sorted(filtered.counts.items())},
        "kept": counts["kept"],
        # pairs kept per reply (a reply holding several tasks may give more than one)
        "keep_rate": round(counts["kept"] / counts["generated"], 4) if counts["generated"] else None,
        "verification": summary(judged) if cfg.verify.enabled else None,
    }


def shortfall(report: dict, cfg: SynthesizeConfig) -> str:
    """Why too few pairs survived: every generator's counts, the largest loss named first."""
    parts = []
    if not cfg.docstring_pairs:
        parts.append("docstring pairs are off (synthesize.docstring_pairs: false)")
    else:
        parts.append(
            f"{report['by_source'].get('docstring', 0)} docstring pairs from {report['rows_in']} records"
        )
    losses: Counter = Counter()
    for mode in TEACHER_MODES:
        m = report[mode]
        if not m.get("enabled"):
            parts.append(f"{mode} is off")
            continue
        losses.update({k: m[k] for k in ("not_produced", "unparseable", "truncated")} | m["rejected"])
        dropped = ", ".join(
            f"{k} {v}" for k, v in ({"truncated": m["truncated"]} | m["rejected"]).items() if v
        )
        parts.append(
            f"{mode} kept {m['kept']} of {m['generated']} replies to {m['prompts']} prompts "
            f"(not produced {m['not_produced']}, unparseable {m['unparseable']}"
            + (f", {dropped}" if dropped else "")
            + ")"
        )
    if (teacher := report.get("teacher")) and teacher.get("stopped"):
        parts.append(f"the teacher stopped at its budget cap synthesize.teacher.{teacher['stopped']}")
    cause = (
        f"; most were lost to {losses.most_common(1)[0][0]}" if losses and losses.most_common(1)[0][1] else ""
    )
    return (
        f"synthesize kept {report['rows_out']} pairs, fewer than synthesize.min_records ({cfg.min_records})"
        f"{cause}: " + "; ".join(parts) + ". Enable more generators, ask for more prompts, use a stronger "
        "teacher (synthesize.teacher), set synthesize.verify.keep: all, or lower synthesize.min_records."
    )
