"""What a person reads at the end of a run: one line per stage with its headline result, the promotion
decision with its reason, and where the MLflow run is.

Headlines read the stage's report.json; a report without the expected fields (an older run, a profile
that disabled a part) shows what it has rather than failing the run's last line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tasks.common.stage import StageOutput, read_report

Report = Mapping[str, Any]


def _get(report: Report, *path: str) -> Any:
    value: Any = report
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def _scrape(r: Report) -> str:
    doctests = _get(r, "definitions", "with_doctests")
    shown = "-" if doctests is None else doctests
    return f"{r['rows_out']} records from {r['rows_in']} files, {shown} with doctests"


def _base_model(r: Report) -> str:
    n = r.get("parameters")
    size = "" if not isinstance(n, int | float) else f" ({n / 1e6:.0f}M" if n >= 1e6 else f" ({n / 1e3:.0f}K"
    name = r.get("name") or f"scratch model, {r.get('pretrain_steps', 0)} pretraining steps"
    return f"{name}{size} parameters)" if size else name


def _synthesize(r: Report) -> str:
    by_source = r.get("by_source") or {}
    return f"{r['rows_out']} pairs: " + ", ".join(f"{n} {source}" for source, n in by_source.items())


def _datasets(r: Report) -> str:
    sources = r.get("sources") or {}
    if not sources:
        return "none configured"
    rejected = sum(sum(s["rejected"].values()) for s in sources.values())
    mix = ", ".join(f"{s['rows']} {name.removeprefix('dataset:')}" for name, s in sources.items())
    return f"{r['rows_out']} rows: {mix}" + (f" ({rejected} bad records quarantined)" if rejected else "")


def _clean(r: Report) -> str:
    dropped = {k: v for k, v in (r.get("dropped") or {}).items() if v}
    top = sorted(dropped.items(), key=lambda kv: -kv[1])[:2]
    shown = ", ".join(f"{k} {v}" for k, v in top)
    return f"kept {r['rows_out']} of {r['rows_in']}" + (f" (dropped: {shown}, ...)" if shown else "")


def _tokenize(r: Report) -> str:
    return f"{r.get('train_rows')} train / {r.get('test_rows')} test rows, {r.get('train_tokens')} tokens"


def _train(r: Report) -> str:
    """The training loss smoothed: one logged batch's loss is noisy (1.658 -> 1.671 read as no learning in a
    run whose held-out loss fell from 1.92 to 1.54: the evaluate row shows that one)."""
    text = f"{r.get('method')}, {r.get('steps')} steps"
    if r.get("resumed_from_step") is not None:
        text += f" (resumed from step {r['resumed_from_step']})"
    first, last = r.get("mean_loss_first_quarter"), r.get("mean_loss_last_quarter")
    if first is None:  # a report from before the smoothed losses
        first, last = r.get("first_logged_loss"), r.get("last_logged_loss")
        return f"{text}, loss {_num(first)} -> {_num(last)} (first and last logged batch)"
    return f"{text}, train loss {_num(first)} -> {_num(last)} (mean of the first and last quarter of steps)"


EVALUATE_HEADLINE = (  # (metric, digits, shown as): the few numbers a person reads first
    ("heldout.nll", 3, "held-out loss"),  # nats per token: the training loss's unit, on unseen rows
    ("heldout.bits_per_byte", 3, "bits/byte"),
    ("heldout.rougeL_written", 3, "rougeL written"),
    ("completion.edit_similarity", 3, "next-line edit sim"),
    ("humaneval.pass_at_1", 3, "HumanEval pass@1"),
)


def _evaluate(r: Report) -> str:
    """Each headline metric: the fine-tuned mean, and the paired difference to the base with its interval."""
    parts = []
    for name, digits, label in EVALUATE_HEADLINE:
        suite, metric = name.split(".", 1)
        entry = _get(r, "suites", suite, "metrics", metric)
        if not entry:
            continue
        ours, diff = entry["systems"]["finetuned"]["mean"], _get(entry, "vs", "base")
        base = _get(entry, "systems", "base", "mean")
        text = f"{label} {_num(ours, digits)} (base {_num(base, digits)}"
        if diff and not diff.get("undecidable"):
            low, high = diff["ci"]
            text += f", paired {diff['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
        parts.append(text + ")")
    return ", ".join(parts) or "no scores"


def _register(r: Report) -> str:
    decision = "promoted to champion" if r.get("promoted") else "not promoted"
    return f"{r.get('model_name')} v{r.get('version')} {decision}"


HEADLINES: dict[str, Callable[[Report], str]] = {
    "scrape": _scrape,
    "base_model": _base_model,
    "synthesize": _synthesize,
    "datasets": _datasets,
    "clean": _clean,
    "tokenize": _tokenize,
    "train": _train,
    "evaluate": _evaluate,
    "register": _register,
}


def headline(out: StageOutput) -> str:
    report = {**read_report(out), "rows_in": out.rows_in, "rows_out": out.rows_out}
    try:
        return HEADLINES[out.stage](report) if out.stage in HEADLINES else ""
    except (KeyError, TypeError, ValueError):  # a report from before a field existed
        return ""


def format_table(summary: Mapping[str, Any]) -> str:
    rows = [("stage", "status", "seconds", "result")]
    for name, s in summary["stages"].items():
        rows.append((name, s["status"], f"{s['seconds']:.1f}", s.get("headline", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3]]).rstrip()
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(lines)


def format_footer(summary: Mapping[str, Any], log: Path | None = None) -> str:
    """The promotion decision and its reason, and where to look next."""
    mlflow = summary["mlflow"]
    lines = []
    if "version" in mlflow:
        lines.append(
            f"model {mlflow['model_name']} v{mlflow['version']} aliases={','.join(mlflow['aliases'])}: "
            f"{'promoted' if mlflow['promoted'] else 'not promoted'}: {mlflow['gate_reason']}"
        )
    where = mlflow.get("run_url") or (
        f"run {mlflow['run_id']} in experiment {mlflow.get('experiment')} of {mlflow['tracking_uri']} "
        f"(`make tracking-server`, then http://127.0.0.1:5000)"
    )
    lines.append(f"mlflow: {where}")
    if log:
        lines.append(f"library warnings and progress: {log} (--verbose shows them here)")
    lines.append(f"summary: {summary['summary_path']}")
    return "\n".join(lines)
