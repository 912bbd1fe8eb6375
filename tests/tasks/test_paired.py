"""Paired comparisons (tasks/evaluation/paired.py): the interval of per-item differences, its orientation,
the power it has, and what is undecidable."""

from __future__ import annotations

import random

import pytest

from tasks.evaluation.paired import compare, comparisons, undecidable


def noisy(level: float, n: int, seed: int, spread: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + spread * rng.gauss(0, 1) for _ in range(n)]


def test_pairing_sees_a_shift_that_two_separate_intervals_hide():
    """Items differ a lot in difficulty (shared by both systems); the systems differ by 0.1 on each."""
    difficulty = noisy(0.0, 40, seed=1, spread=1.0)
    ours, theirs = [d + 0.1 for d in difficulty], difficulty
    result = compare(ours, theirs)
    assert result["difference"] == pytest.approx(0.1) and result["ci"] == [pytest.approx(0.1)] * 2
    assert result["improvement_low"] == pytest.approx(0.1) and result["undecidable"] is None


def test_direction_orients_the_gain_bound():
    ours, theirs = noisy(1.0, 50, seed=2, spread=0.1), noisy(1.5, 50, seed=3, spread=0.1)
    higher, lower = compare(ours, theirs, "higher"), compare(ours, theirs, "lower")
    assert higher["ci"] == lower["ci"] and higher["ci"][1] < 0  # ours is lower on every reading
    assert higher["improvement_low"] == higher["ci"][0] < 0  # worse where higher is better
    assert lower["improvement_low"] == -lower["ci"][1] > 0  # better where lower is better


def test_half_width_and_detectable_difference_shrink_with_n():
    few = compare(noisy(0.5, 20, seed=4), noisy(0.5, 20, seed=5))
    many = compare(noisy(0.5, 500, seed=4), noisy(0.5, 500, seed=5))
    assert many["half_width"] < few["half_width"] / 3  # ~1/sqrt(n): 25x the items, ~5x narrower
    for r in (few, many):  # (1.96 + 0.84) / 1.96 half-widths: the 80%-power detectable difference
        assert r["detectable"] == pytest.approx(r["half_width"] * 2.8016 / 1.96, rel=1e-3)


def test_undecidable_items_are_named_not_read_as_ties():
    assert undecidable([0.0] * 8, [0.0] * 8) == "both systems score 0 on all 8 items: no evidence either way"
    assert undecidable([1.0], [0.0]) == "1 item(s): too few for an interval"
    assert undecidable([0.0] * 7 + [1.0], [0.0] * 8) is None  # one problem solved is evidence (if weak)
    assert undecidable([0.3, 0.5], [0.3, 0.5]) is None  # the same model twice: a zero-width tie, decidable
    with pytest.raises(ValueError, match="same items"):
        compare([1.0, 2.0], [1.0])


def test_comparisons_table_covers_every_system_scored_on_a_metric():
    scores = {
        "finetuned": {"rougeL": [0.5, 0.6, 0.7], "nll": [1.0, 1.1, 0.9]},
        "base": {"rougeL": [0.1, 0.2, 0.3], "nll": [2.0, 2.1, 1.9]},
        "echo_input": {"rougeL": [0.4, 0.4, 0.4]},  # no likelihood for a baseline that is not a model
    }
    table = comparisons(scores, {"rougeL": "higher", "nll": "lower"})
    assert set(table["rougeL"]["vs"]) == {"base", "echo_input"} and set(table["nll"]["vs"]) == {"base"}
    assert table["nll"]["vs"]["base"]["difference"] == pytest.approx(-1.0)
    assert table["nll"]["vs"]["base"]["improvement_low"] == pytest.approx(1.0)
    assert table["rougeL"]["systems"]["echo_input"]["mean"] == pytest.approx(0.4)
