"""The evaluation as one figure: each headline metric's scores, system by system (the fine-tuned model, its
base, the baselines), with their 95% intervals; and, once the register stage has decided, first, the gate's
paired comparisons (against the base, the baselines, the champion, and the guards) as gains with their
intervals beside the bound each had to clear. The pipeline's MLflow run shows it next to the evaluate report
(flows/run_page.py); its numbers are the report's (tasks/evaluation/report.py), drawn, not recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline_config.metrics import LOWER, direction
from tasks.evaluation.report import HEADLINE_METRICS, SYSTEM_NAMES, metric_entry, systems_in

COLOURS = {"finetuned": "tab:blue", "base": "tab:gray"}
BASELINE_COLOUR = "tab:orange"
PASSED, FAILED = "tab:green", "tab:red"


def _scores_panel(ax, report: Mapping, metric: str) -> None:
    entry = metric_entry(report, metric)
    systems = systems_in(report, [metric])
    for y, system in enumerate(reversed(systems)):
        s = entry["systems"][system]
        mean, ci = s["mean"], s.get("ci") or [None, None]
        err = None if None in ci else [[mean - ci[0]], [ci[1] - mean]]
        colour = COLOURS.get(system, BASELINE_COLOUR)
        ax.errorbar(mean, y, xerr=err, fmt="o", capsize=4, color=colour)
        ax.annotate(
            f"{mean:.3f}", (mean, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
        )
    ax.set_yticks(range(len(systems)), [SYSTEM_NAMES.get(s, s) for s in reversed(systems)], fontsize=8)
    ax.set_ylim(-0.6, len(systems) - 0.4)
    ax.set_title(f"{metric}\n{entry['direction']} is better, n {entry['n']}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def _gate_panel(ax, gate: Mapping) -> None:
    """Gains (challenger - other, turned so that right is better), each with its interval and its bound."""
    comparisons = [c for c in gate["comparisons"] if c["ci"]]
    for y, c in enumerate(reversed(comparisons)):
        sign = -1.0 if direction(c["metric"]) == LOWER else 1.0
        gain = sign * c["difference"] + 0.0  # no "-0.0000"
        low, high = sorted(sign * end for end in c["ci"])
        colour = PASSED if c["passed"] else FAILED
        ax.errorbar(gain, y, xerr=[[gain - low], [high - gain]], fmt="o", capsize=4, color=colour)
        verdict = "passed" if c["passed"] else "failed"
        ax.annotate(
            f"{gain:+.4f} {verdict}",
            (gain, y),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
        )
        bound = float(c["required"].split()[-1]) if c["required"] else 0.0
        ax.plot([bound, bound], [y - 0.35, y + 0.35], color="black", linestyle="--", linewidth=1)
    labels = [
        f"guard {c['metric']}\nvs {c['against']}" if c["role"] == "guard" else f"vs {c['against']}"
        for c in reversed(comparisons)
    ]
    ax.set_yticks(range(len(comparisons)), labels, fontsize=8)
    ax.set_ylim(-0.6, max(len(comparisons), 1) - 0.4)
    ax.axvline(0.0, color="gray", linewidth=0.8)
    verdict = "promoted" if gate["promote"] else "not promoted"
    ax.set_title(
        f"The gate on {gate['metric']}: {verdict}\ngain, paired 95% interval; dashes: bound", fontsize=9
    )
    ax.set_xlabel("challenger better →", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    if not comparisons:
        ax.text(0.5, 0.5, "no comparison could be made", ha="center", va="center", transform=ax.transAxes)


def plot_comparison(
    report: Mapping,
    path: Path,
    gate: Mapping | None = None,
    metrics: Sequence[str] = HEADLINE_METRICS,
    title: str = "",
) -> None:
    """`report`: the evaluate stage's report.json; `gate`: the register stage's decision
    (`Decision.record()`), drawn as the first panel when given. Writes a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")  # no display where pipelines run
    import matplotlib.pyplot as plt

    shown = [
        m for m in dict.fromkeys([*metrics, *([gate["metric"]] if gate else [])]) if metric_entry(report, m)
    ]
    panels = len(shown) + (1 if gate else 0)
    cols = max(1, min(panels, 3))
    rows = max(1, math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 0.8 + 2.4 * rows), squeeze=False)
    flat = list(axes.flat)
    if gate:  # the decision first: the panel that says why
        _gate_panel(flat[0], gate)
    for ax, metric in zip(flat[1 if gate else 0 :], shown, strict=False):
        _scores_panel(ax, report, metric)
    for ax in flat[panels:]:
        ax.set_visible(False)
    if not panels:
        flat[0].set_visible(True)
        flat[0].text(0.5, 0.5, "no headline metric was scored", ha="center", va="center")
        flat[0].set_axis_off()
    default = "Fine-tuned vs base and baselines: mean and 95% interval on the same items"
    if gate:
        verdict = "Promoted" if gate["promote"] else "Not promoted"
        default = f"{verdict}: the gate's paired gains, then each system's mean and 95% interval"
    fig.suptitle(title or default, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
