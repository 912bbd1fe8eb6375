"""The evaluation as markdown: one table of every paired comparison with its interval and power, the
generation settings, and example rows.

The same comparison table goes into the registered model's card (tasks/registration/card.py) and the
Prefect artifact (the stage's report.md); `systems_table`, every system's headline scores side by side, heads
the pipeline's MLflow run description (flows/run_page.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.common.io import iter_jsonl

EXAMPLES_SHOWN = 10
CELL_CHARS = 160
# the few scores a person reads first: the MLflow run's headline charts, its description and comparison chart
HEADLINE_METRICS = (
    "heldout.bits_per_byte",
    "heldout.nll",
    "heldout.rougeL",
    "heldout.rougeL_written",
    "completion.edit_similarity",
    "fim.exact_match",
    "humaneval.pass_at_1",
    "sklearn_doctests.pass_at_1",
)
SYSTEM_NAMES = {"finetuned": "fine-tuned", "echo_input": "echo_input (baseline)"}
SYSTEM_NAMES |= {"previous_line": "previous_line (baseline)"}
SHOWN_METRICS = {  # the metrics the summary table shows per suite (report.json has all of them)
    "heldout": ("bits_per_byte", "nll", "rougeL", "rougeL_written", "edit_similarity_written", "exact_match"),
}


def cell(value) -> str:
    """A markdown table cell: pipes escaped, newlines kept visible, long text cut."""
    text = str(value)
    text = text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("\n", "⏎ ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def interval(mean: float, ci: list[float] | None, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    if ci is None or None in ci:
        return f.format(mean)
    return f"{f.format(mean)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def metric_entry(report: Mapping, name: str) -> Mapping | None:
    """The evaluation report's entry for `suite.metric` (direction, n, systems, vs), or None."""
    suite, _, metric = name.partition(".")
    return report.get("suites", {}).get(suite, {}).get("metrics", {}).get(metric)


def systems_in(report: Mapping, metrics: tuple[str, ...] | list[str]) -> list[str]:
    """The systems scored on any of `metrics`: the fine-tuned model, its base, then the baselines."""
    found = [s for m in metrics if (e := metric_entry(report, m)) for s in e["systems"]]
    return list(dict.fromkeys(s for s in ("finetuned", "base", *found) if s in found))


def systems_table(report: Mapping, metrics: tuple[str, ...] | list[str] = HEADLINE_METRICS) -> str:
    """Systems x metrics: each system's mean with its 95% interval on the same items; a system a metric does
    not score (a baseline that writes no code) is left blank."""
    shown = [m for m in dict.fromkeys(metrics) if metric_entry(report, m)]
    header = ["system"] + [
        f"{m} ({metric_entry(report, m)['direction']} is better, n {metric_entry(report, m)['n']})"
        for m in shown
    ]
    rows = [
        [SYSTEM_NAMES.get(system, system)]
        + [
            interval(s["mean"], s.get("ci")) if (s := metric_entry(report, m)["systems"].get(system)) else ""
            for m in shown
        ]
        for system in systems_in(report, shown)
    ]
    return table(header, rows)


def comparison_records(report: Mapping) -> list[dict]:
    """One record per suite, metric and other system: n, both means with intervals, the paired difference
    with its interval, the half-width and the smallest difference this n detects (80% power). The rows of
    the markdown table, and `comparisons.jsonl` (an MLflow table)."""
    records = []
    for suite, entry in report["suites"].items():
        metrics = entry["metrics"]
        for metric in SHOWN_METRICS.get(suite, tuple(metrics)):
            if metric not in metrics:
                continue
            m = metrics[metric]
            ours = m["systems"]["finetuned"]
            for other, diff in m["vs"].items():
                theirs = m["systems"][other]
                records.append(
                    {
                        "metric": f"{suite}.{metric}",
                        "better": m["direction"],
                        "n": m["n"],
                        "finetuned": interval(ours["mean"], ours["ci"]),
                        "vs": other,
                        "other": interval(theirs["mean"], theirs["ci"]),
                        "difference": interval(diff["difference"], diff["ci"], signed=True),
                        "half_width / detectable": f"±{diff['half_width']:.3f} / {diff['detectable']:.3f}",
                        "verdict": "undecidable" if diff["undecidable"] else _verdict(diff, m["direction"]),
                    }
                )
    return records


def _verdict(diff: Mapping, direction: str) -> str:
    low, high = diff["ci"]
    better, worse = (high < 0, low > 0) if direction == "lower" else (low > 0, high < 0)
    return "fine-tuned better" if better else "fine-tuned worse" if worse else "no difference shown"


COMPARISON_HEADER = [
    "metric",
    "better",
    "n",
    "fine-tuned",
    "vs",
    "other",
    "fine-tuned - other (paired 95% CI)",
    "half-width / detectable",
    "verdict",
]


def comparisons_table(report: Mapping) -> str:
    return table(COMPARISON_HEADER, [list(r.values()) for r in comparison_records(report)])


def generation_line(g: Mapping) -> str:
    per = "; ".join(
        f"{s}: {g[s]['hit_cap']} hit the cap, {g[s]['empty']} empty" for s in ("base", "finetuned") if s in g
    )
    precision = g.get("precision", "fp32")
    return (
        f"Greedy in {precision}, max_new_tokens {g['max_new_tokens']} ({g['rule']}; "
        f"{g['references_longer']} references are longer), template `{g['template']}`, stop at its headers; "
        f"likelihoods in fp32. {per}."
    )


def suites_line(report: Mapping) -> str:
    parts = []
    for name, s in report["suites"].items():
        styles = s.get("prompt_style")
        how = f", prompted {', '.join(f'{k}: {v}' for k, v in styles.items())}" if styles else ""
        skipped = s.get("not_scored")
        skip = f", not scored: {', '.join(f'{k} ({v})' for k, v in skipped.items())}" if skipped else ""
        took = s.get("seconds")
        took = f" ({', '.join(f'{k} {v:.0f} s' for k, v in took.items())})" if took else ""
        parts.append(f"{name} {s['items']} items{took}{how}{skip}")
    return "Suites: " + "; ".join(parts) + "."


def write_markdown(path: Path, report: Mapping, predictions: Path) -> None:
    box = report.get("sandbox")
    examples = [e for e in iter_jsonl(predictions) if "finetuned" in e.get("outputs", {})][:EXAMPLES_SHOWN]
    parts = [
        "# Evaluation: every system on the same items, every comparison paired",
        suites_line(report),
        f"Held-out rows: likelihood on all {report['rows_in']}, generations on "
        f"{report['suites']['heldout']['generated']}. {generation_line(report['generation'])}",
        comparisons_table(report),
        "`_written`: scored on what the system wrote beyond the prompt's input (the signature a reference "
        "starts with), so repeating the prompt earns nothing. Half-width: of the paired interval; "
        "detectable: the smallest true difference this n finds at 80% power."
        + (f" Generated code ran in the sandbox `{box['backend']}`: {box['isolation']}." if box else ""),
        f"## The first {len(examples)} generated held-out rows",
        table(
            [
                "id",
                "prompt (end)",
                "reference",
                "echo",
                "base",
                "fine-tuned",
                "rougeL base",
                "rougeL fine-tuned",
            ],
            [
                [e["id"], e["prompt"][-CELL_CHARS:], e["reference"]]
                + [e["outputs"][s] for s in ("echo_input", "base", "finetuned")]
                + [f"{e['scores'][s]['rougeL']:.3f}" for s in ("base", "finetuned")]
                for e in examples
            ],
        ),
    ]
    path.write_text("\n\n".join(parts) + "\n")
