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


TRAINED = {"method": "lora", "steps": 240, "first_logged_loss": 1.658, "last_logged_loss": 1.671}


def test_train_headline_smooths_the_noisy_first_and_last_batch():
    report = TRAINED | {
        "mean_loss_first_quarter": 2.104,
        "mean_loss_last_quarter": 1.512,
        "resumed_from_step": None,
    }
    assert HEADLINES["train"](report) == (
        "lora, 240 steps, train loss 2.104 -> 1.512 (mean of the first and last quarter of steps)"
    )


def test_train_headline_says_that_the_training_resumed_and_from_where():
    report = TRAINED | {
        "mean_loss_first_quarter": 2.104,
        "mean_loss_last_quarter": 1.512,
        "resumed_from_step": 120,
    }
    assert HEADLINES["train"](report).startswith("lora, 240 steps (resumed from step 120), train loss 2.104")


def test_train_headline_of_an_older_report_names_what_its_numbers_are():
    assert HEADLINES["train"](TRAINED) == "lora, 240 steps, loss 1.658 -> 1.671 (first and last logged batch)"


def test_evaluate_headline_gives_the_held_out_loss_before_and_after_first():
    report = {
        "suites": {
            "heldout": {
                "metrics": {
                    "bits_per_byte": metric(0.61, 0.83, -0.22, [-0.25, -0.19]),
                    "nll": metric(1.54, 1.92, -0.38, [-0.41, -0.35]),
                }
            }
        }
    }
    assert HEADLINES["evaluate"](report).startswith(
        "held-out loss 1.540 (base 1.920, paired -0.380 [-0.410, -0.350]), bits/byte 0.610"
    )
