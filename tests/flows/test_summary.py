"""The end-of-run headlines (flows/summary.py) from report fields, and what they show without some."""

from __future__ import annotations

from flows.summary import HEADLINES


def metric(ours: float, base: float, diff: float, ci: list[float], undecidable=None) -> dict:
    return {
        "systems": {"finetuned": {"mean": ours}, "base": {"mean": base}},
        "vs": {"base": {"difference": diff, "ci": ci, "undecidable": undecidable}},
    }


def test_evaluate_headline_gives_scores_beside_their_baselines():
    report = {
        "suites": {
            "heldout": {"metrics": {"bits_per_byte": metric(0.61, 0.83, -0.22, [-0.25, -0.19])}},
            "humaneval": {"metrics": {"pass_at_1": metric(0.0, 0.0, 0.0, [0.0, 0.0], "both 0")}},
        }
    }
    assert HEADLINES["evaluate"](report) == (
        "bits/byte 0.610 (base 0.830, paired -0.220 [-0.250, -0.190]), HumanEval pass@1 0.000 (base 0.000)"
    )


def test_evaluate_headline_without_the_suites_shows_what_it_has():
    assert HEADLINES["evaluate"]({"suites": {}}) == "no scores"


def test_datasets_headline_gives_the_mix_and_the_quarantined():
    def source(rows: int, bad: int) -> dict:
        return {"rows": rows, "rejected": {"malformed_json": bad, "missing_field": 0}}

    report = {"rows_out": 30, "sources": {"dataset:alpaca": source(20, 2), "dataset:chat": source(10, 1)}}
    assert HEADLINES["datasets"](report) == "30 rows: 20 alpaca, 10 chat (3 bad records quarantined)"
    assert HEADLINES["datasets"]({"rows_out": 0, "sources": {}}) == "none configured"
