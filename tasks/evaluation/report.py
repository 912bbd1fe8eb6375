"""The evaluation as markdown: the summary with intervals and baselines, pass@k, and example rows.

The same summary table goes into the registered model's card (tasks/registration/card.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tasks.common.io import iter_jsonl

TEXT_METRICS = ("rougeL", "rouge1", "rouge2", "rougeLsum", "exact_match")
EXAMPLES_SHOWN = 10
CELL_CHARS = 160


def cell(value) -> str:
    """A markdown table cell: pipes escaped, newlines kept visible, long text cut."""
    text = str(value)
    text = text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|").replace("\n", "⏎ ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def with_ci(result: Mapping, metric: str) -> str:
    mean, ci = result[metric], result.get("ci", {}).get(metric)
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{mean:.3f}"


def metrics_table(report: Mapping) -> str:
    """Mean and 95% bootstrap interval per metric for the echo baseline, the base and the fine-tuned model."""
    rows = [
        [m, with_ci(report["echo_input"], m), with_ci(report["base"], m), with_ci(report["finetuned"], m)]
        + [f"{report['delta'][m]:+.3f}"]
        for m in TEXT_METRICS
    ]
    rows.append(
        ["perplexity", "", f"{report['base']['perplexity']:.2f}", f"{report['finetuned']['perplexity']:.2f}"]
        + [f"{report['delta']['perplexity']:+.2f}"]
    )
    return table(["metric", "echo input (baseline)", "base", "fine-tuned", "fine-tuned - base"], rows)


def passk_table(report: Mapping) -> str | None:
    benches = {k: v for k, v in report.items() if isinstance(v, Mapping) and "problems" in v}
    if not benches:
        return None
    rows = [
        [
            name,
            b["problems"],
            f"pass@{k.removeprefix('pass_at_')}",
            f"{b['base'][k]:.3f}",
            f"{b['finetuned'][k]:.3f}",
        ]
        for name, b in benches.items()
        for k in b.get("finetuned", {})
    ]
    return table(["benchmark", "problems", "metric", "base", "fine-tuned"], rows)


def generation_line(g: Mapping) -> str:
    per = "; ".join(
        f"{s}: {g[s]['hit_cap']} hit the cap, {g[s]['empty']} empty" for s in ("base", "finetuned") if s in g
    )
    return (
        f"Greedy, max_new_tokens {g['max_new_tokens']} ({g['rule']}; {g['references_longer']} references "
        f"are longer), template `{g['template']}`, stop at its headers. {per}."
    )


def write_markdown(path: Path, report: Mapping, predictions: Path) -> None:
    examples = list(iter_jsonl(predictions))[:EXAMPLES_SHOWN]
    parts = [
        "# Evaluation on the held-out set",
        f"{report['rows_in']} held-out rows. {generation_line(report['generation'])}",
        metrics_table(report),
    ]
    if passk := passk_table(report):
        parts += ["## pass@k (sandboxed execution)", passk]
    parts += [
        f"## The first {len(examples)} examples",
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
                [
                    e["id"],
                    e["prompt"][-CELL_CHARS:],
                    e["reference"],
                    e["echo_input"],
                    e["base"],
                    e["finetuned"],
                ]
                + [f"{e['scores'][s]['rougeL']:.3f}" for s in ("base", "finetuned")]
                for e in examples
            ],
        ),
    ]
    path.write_text("\n\n".join(parts) + "\n")
