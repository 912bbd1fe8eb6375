"""What a registered version says about itself, in words: its description on the registry page (whether
and why it was promoted, what it is and how it was trained, its primary score against its base,
baselines and champion) and the decision's markdown (the register stage's report.md, a Prefect
artifact)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.registration.gate import Comparison, Decision, gate_table

Candidate = Any  # tasks/registration/registry.py's Candidate (which imports this module)


def decision_markdown(record: Mapping) -> str:
    gate = record["gate"]
    verdict = "promoted to champion" if record["promoted"] else "not promoted"
    return (
        f"# {record['model_name']} v{record['version']}: {verdict}\n\n{gate['reason']}.\n\n"
        f"Aliases: {', '.join(record['aliases'])}. Model: `{record['model_uri']}`.\n\n"
        + gate_table(gate)
        + "\n"
    )


def trained_how(c: Candidate) -> str:
    """`a lora fine-tune of <base> (licence, parameters; origin), 6 steps on 67 rows, profile tiny`."""
    card, train = c.base.get("card", {}), c.config.get("train", {})
    shown = {k: f"{v:,}" if isinstance(v, int) else v for k, v in card.items()}
    facts = "; ".join(
        f"{label}{shown[k]}"
        for k, label in (("license", "licence "), ("parameters", "parameters "), ("origin", ""))
        if card.get(k)
    )
    base = card.get("name", "an unnamed base model") + (f" ({facts})" if facts else "")
    steps = c.training.get("steps")
    if steps is None:  # the train report was not handed over: what the config asked for
        steps = train.get("max_steps") if (train.get("max_steps") or -1) > 0 else None
        length = f"{steps} steps" if steps else f"{train.get('num_epochs', '?')} epoch(s)"
    else:
        length = f"{steps} steps"
    rows = f" on {c.training['rows_in']} training rows" if "rows_in" in c.training else ""
    profile = f", profile `{c.config['name']}`" if c.config.get("name") else ""
    return f"A {train.get('method', 'fine-tuning')} fine-tune of {base}, {length}{rows}{profile}"


def description(c: Candidate, decision: Decision) -> str:
    """The version's description (markdown on its registry page): whether and why it was promoted, what it
    is and how it was trained, and its primary score against its base, baselines and champion."""
    verdict = "Promoted" if decision.promote else "Not promoted"
    primary = decision.metric
    value = c.metrics.get(primary)
    score = f"{value:.4f}" if isinstance(value, int | float) else "not scored"
    lines = [
        f"**{verdict}**: {decision.reason}.",
        "",
        f"{trained_how(c)}; evaluated on set `{c.eval_set_key}`.",
        "",
        f"{primary}: {score}. Paired against (challenger - other, 95% interval):",
    ]
    lines += [f"- {Comparison(**comparison).line()}" for comparison in decision.comparisons]
    if not decision.comparisons:
        lines.append("- no paired comparison was possible")
    return "\n".join(lines)
