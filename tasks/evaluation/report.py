"""The evaluation as markdown: one table of every paired comparison with its interval and power, the
generation settings, and example rows.

The same comparison table goes into the registered model's card (tasks/registration/card.py) and the
Prefect artifact (the stage's report.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.common.io import iter_jsonl

EXAMPLES_SHOWN = 10
CELL_CHARS = 160
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


def interval(mean: float, ci: list[float], signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(mean)} [{f.format(ci[0])}, {f.format(ci[1])}]"


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
    return (
        f"Greedy, max_new_tokens {g['max_new_tokens']} ({g['rule']}; {g['references_longer']} references "
        f"are longer), template `{g['template']}`, stop at its headers. {per}."
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
