"""The rules across sections: the gate's metrics are ones the evaluation computes."""

from __future__ import annotations

import pytest

from pipeline_config import load_config
from tests.pipeline_config.helpers import VALID, raises_config_error, write


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "register:\n  primary_metric: heldout.perplexity\n",
            "register.primary_metric: the heldout suite has no metric 'perplexity'; it computes: nll,",
        ),
        (
            "register:\n  primary_metric: humaneval.pass_at_1\n",
            "register.primary_metric: unknown suite 'humaneval' in metric 'humaneval.pass_at_1'",
        ),  # HumanEval is not enabled in this profile
        (
            "register:\n  guards:\n    - {metric: completion.edit_similarity, margin: 0.1}\n",
            "register.guards[0].metric: unknown suite 'completion'",
        ),
        (
            "register:\n  guards:\n    - {metric: heldout.rougeL, margin: -0.1}\n",
            "register.guards.0.margin, line 12: must be >= 0: it is how much worse than the base",
        ),
        (
            "register:\n  must_beat: [echo_input]\n",
            "register.must_beat: echo_input is not scored on heldout.bits_per_byte",
        ),
        ("register:\n  must_beat: [champion]\n", "unknown baseline(s) ['champion']; known: base,"),
    ],
)
def test_gate_metrics_are_ones_the_evaluation_computes(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, VALID + text))


def test_gate_metrics_follow_the_enabled_benchmarks(tmp_path):
    text = (
        "evaluate:\n  humaneval: {enabled: true, samples: 5, k: [1, 5]}\n  completion: {next_line: 10}\n"
        "register:\n  primary_metric: heldout.rougeL_written\n  must_beat: [base, echo_input]\n"
        "  guards:\n    - {metric: humaneval.pass_at_5, margin: 0.1}\n"
        "    - {metric: completion.exact_match, margin: 0}\n"
    )
    cfg = load_config(write(tmp_path, VALID + text))
    assert [g.metric for g in cfg.register.guards] == ["humaneval.pass_at_5", "completion.exact_match"]
