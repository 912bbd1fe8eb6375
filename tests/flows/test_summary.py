"""The end-of-run headlines (flows/summary.py) from report fields, and what they show without some."""

from __future__ import annotations

from flows.summary import HEADLINES


def test_evaluate_headline_gives_scores_beside_their_baselines():
    report = {
        "finetuned": {"rougeL": 0.3969, "perplexity": 4.6125},
        "base": {"rougeL": 0.1771, "perplexity": 6.4717},
        "echo_input": {"rougeL": 0.4091},
        "humaneval": {"finetuned": {"pass_at_1": 0.125}, "base": {"pass_at_1": 0.0}},
    }
    assert HEADLINES["evaluate"](report) == (
        "rougeL 0.397 (base 0.177, echo 0.409), perplexity 4.61 (base 6.47), "
        "HumanEval pass@1 0.125 (base 0.000)"
    )


def test_evaluate_headline_without_perplexity_or_humaneval_shows_what_it_has():
    report = {"finetuned": {"rougeL": 0.5}, "base": {"rougeL": 0.25}}
    assert HEADLINES["evaluate"](report) == "rougeL 0.500 (base 0.250, echo -)"
