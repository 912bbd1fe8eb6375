"""The champion/challenger decision (tasks/registration/gate.py) on per-item scores: paired intervals against
the base, the baselines and the champion, guards against forgetting, undecidable comparisons."""

from __future__ import annotations

import pytest

from tasks.registration.gate import decide

IDS = [f"ex{i}" for i in range(30)]
WIGGLE = [((i * 7) % 11 - 5) / 100 for i in range(30)]  # deterministic per-example noise, mean ~0


def scores(level: float, noise: float = 1.0) -> dict[str, float]:
    return {i: level + noise * w for i, w in zip(IDS, WIGGLE, strict=True)}


def gate(challenger, base, champion=None, margin=0.0, metric="heldout.rougeL", **kw):
    evidence = {metric: {"finetuned": challenger, "base": base}} | kw.pop("evidence", {})
    return decide(evidence, metric, min_improvement=margin, champion=champion, champion_version="1", **kw)


@pytest.mark.parametrize(
    ("challenger", "base", "champion", "margin", "promote", "reason"),
    [
        (scores(0.3), scores(0.1), None, 0.0, True, "no champion yet"),
        (scores(0.1), scores(0.3), None, 0.0, False, "does not beat its base model"),
        (scores(0.4), scores(0.1), scores(0.3, noise=0.5), 0.0, True, "beats the champion v1"),  # clearly
        (scores(0.4), scores(0.1), scores(0.3), 0.2, False, "by register.min_improvement"),  # not by enough
        (scores(0.3), scores(0.1), scores(0.3, noise=-1.0), 0.0, False, "does not beat champion v1"),  # noise
        (scores(0.2), scores(0.1), scores(0.3), 0.0, False, "does not beat champion v1"),  # worse
        ({}, scores(0.1), scores(0.3), 0.0, False, "no per-item"),  # missing metrics never win
        (scores(0.4), scores(0.1), {"other": 0.1}, 0.0, False, "no items scored for both"),
    ],
)
def test_gate_decision(challenger, base, champion, margin, promote, reason):
    decision = gate(challenger, base, champion, margin)
    assert decision.promote is promote and reason in decision.reason
    for c in decision.comparisons:
        if c["ci"]:
            low, high = c["ci"]
            assert low - 1e-9 <= c["difference"] <= high + 1e-9 and c["n"] == 30


def test_the_same_model_twice_is_not_an_improvement():
    """Identical per-item scores: a zero-width interval at 0, which is not above the margin 0."""
    decision = gate(scores(0.3), scores(0.1), champion=scores(0.3))
    champion = next(c for c in decision.comparisons if c["role"] == "champion")
    assert not decision.promote and champion["ci"] == [0.0, 0.0] and champion["required"] == "> 0"
    assert "paired 95% interval [+0.0000, +0.0000] on 30 items" in decision.reason


def test_lower_is_better_metrics_are_oriented():
    """bits per byte: the challenger with fewer bits beats the base; with more it does not."""
    fewer = {i: 0.8 + w for i, w in zip(IDS, WIGGLE, strict=True)}
    more = {i: 1.2 + w for i, w in zip(IDS, WIGGLE, strict=True)}
    assert gate(fewer, more, metric="heldout.bits_per_byte").promote
    refused = gate(more, fewer, metric="heldout.bits_per_byte")
    assert not refused.promote and "lower is better" in refused.reason


@pytest.mark.parametrize(
    ("echo", "champion", "promote", "reason"),
    [
        (scores(0.35), None, False, "does not beat the echo baseline: heldout.rougeL vs echo_input"),
        (scores(0.35), scores(0.1), False, "does not beat the echo baseline"),  # even over a weak champion
        (scores(0.2), None, True, "no champion yet; it beats its base model and the echo baseline"),
    ],
)
def test_gate_requires_beating_every_baseline(echo, champion, promote, reason):
    """register.must_beat: [echo_input]: a model that loses to repeating the prompt is not served."""
    evidence = {"heldout.rougeL": {"finetuned": scores(0.3), "base": scores(0.1), "echo_input": echo}}
    decision = decide(
        evidence, "heldout.rougeL", ["echo_input"], 0.0, champion=champion, champion_version="1"
    )
    assert decision.promote is promote and reason in decision.reason
    assert [c["against"] for c in decision.comparisons][:2] == ["base", "echo_input"]


def test_a_guard_regression_beyond_its_margin_refuses_a_better_model():
    """Better on the primary metric, but HumanEval fell from 6 of 30 problems passed to 0: refused."""
    passed_base = {i: float(n < 6) for n, i in enumerate(IDS)}
    none = dict.fromkeys(IDS, 0.0)
    guard = {"humaneval.pass_at_1": {"finetuned": none, "base": passed_base}}
    refused = gate(scores(0.4), scores(0.1), evidence=guard, guards=[("humaneval.pass_at_1", 0.05)])
    assert not refused.promote and refused.reason.startswith("a guard regressed beyond its margin")
    assert "humaneval.pass_at_1 vs base" in refused.reason and ">= -0.05" in refused.reason
    # a margin narrower than the interval's half-width is said to be (an equal model would fail it)
    assert "margin 0.05 is below the interval's half-width" in refused.comparisons[-1]["note"]
    # a margin as wide as the loss lets it through; and a guard both systems fail everywhere is not a tie
    assert gate(scores(0.4), scores(0.1), evidence=guard, guards=[("humaneval.pass_at_1", 0.5)]).promote
    floor = {"humaneval.pass_at_1": {"finetuned": none, "base": none}}
    unchecked = gate(scores(0.4), scores(0.1), evidence=floor, guards=[("humaneval.pass_at_1", 0.05)])
    note = unchecked.comparisons[-1]["note"]
    assert (
        unchecked.promote and note.startswith("undecidable: both systems score 0") and "not checked" in note
    )


def test_an_undecidable_primary_metric_refuses():
    zeros = dict.fromkeys(IDS, 0.0)
    decision = gate(zeros, zeros, metric="humaneval.pass_at_1")
    assert not decision.promote and "undecidable: both systems score 0 on all 30 items" in decision.reason
