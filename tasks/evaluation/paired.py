"""Paired evidence: two systems scored on the same items are compared through the per-item difference, its
mean and its percentile-bootstrap interval, never through two means with their own intervals (which
overlap long after the paired difference is clear, since per-item difficulty is shared).

Each comparison also says how much it could have seen: the interval's half-width and the smallest true
difference this n would detect at 80% power (a two-sided 5% test: (z_0.975 + z_0.8) standard errors, the
standard error read off the bootstrap interval). A comparison with no information (fewer than two items,
or both systems constant and equal on every item, e.g. 0 of 8 problems passed by both) is `undecidable`,
which a gate must not read as a tie.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline_config.metrics import HIGHER
from tasks.evaluation.metrics import bootstrap_ci

Z_TEST, Z_POWER = 1.959964, 0.841621  # two-sided 5%, 80% power


def summary(values: Sequence[float], seed: int = 0) -> dict:
    """n, mean and 95% bootstrap interval of one system's per-item scores."""
    n = len(values)
    return {"n": n, "mean": sum(values) / n if n else float("nan"), "ci": bootstrap_ci(list(values), seed)}


def undecidable(ours: Sequence[float], theirs: Sequence[float]) -> str | None:
    """Why these scores cannot tell the systems apart whatever the truth is, or None."""
    if len(ours) < 2:
        return f"{len(ours)} item(s): too few for an interval"
    if len(set(ours)) == 1 and set(ours) == set(theirs):
        return f"both systems score {ours[0]:g} on all {len(ours)} items: no evidence either way"
    return None


def compare(ours: Sequence[float], theirs: Sequence[float], direction: str = HIGHER, seed: int = 0) -> dict:
    """ours - theirs per item: mean, 95% interval, half-width, detectable difference, and `improvement_low`,
    the interval's bound on the side that matters (the lower bound of the gain in the metric's better
    direction: > 0 means ours is better at 95%)."""
    if len(ours) != len(theirs):
        raise ValueError(f"paired scores must cover the same items ({len(ours)} vs {len(theirs)})")
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    n = len(differences)
    low, high = bootstrap_ci(differences, seed) if n else (float("nan"), float("nan"))
    half = (high - low) / 2
    return {
        "n": n,
        "difference": sum(differences) / n if n else float("nan"),
        "ci": [low, high],
        "half_width": half,
        "detectable": half * (Z_TEST + Z_POWER) / Z_TEST,
        "improvement_low": low if direction == HIGHER else -high,
        "undecidable": undecidable(ours, theirs),
    }


def comparisons(
    scores: dict[str, dict[str, list[float]]],
    directions: dict[str, str],
    challenger: str = "finetuned",
    seed: int = 0,
) -> dict[str, dict]:
    """Per metric: every system's summary and the challenger's paired difference to each other system.

    `scores[system][metric]` lists per-item scores in one item order for all systems."""
    out: dict[str, dict] = {}
    for metric, direction in directions.items():
        systems = {s: per[metric] for s, per in scores.items() if metric in per}
        if challenger not in systems:
            continue
        ours = systems[challenger]
        out[metric] = {
            "direction": direction,
            "n": len(ours),
            "systems": {s: summary(v, seed) for s, v in systems.items()},
            "vs": {s: compare(ours, v, direction, seed) for s, v in systems.items() if s != challenger},
        }
    return out
