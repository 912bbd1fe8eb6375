"""The figures a person opens from the MLflow run: the loss plot (tasks/training/plots.py) and the
evaluation's comparison chart (tasks/evaluation/chart.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from tasks.evaluation.chart import plot_comparison
from tasks.training.plots import plot_losses

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_loss_plot_is_titled_by_the_curves_it_has(tmp_path: Path):
    both = [{"step": 2, "loss": 6.3}, {"step": 2, "eval_loss": 6.4}, {"step": 4, "loss": 6.1}]
    title = plot_losses(both, tmp_path / "both.png")
    assert title == "Training and held-out loss" and (tmp_path / "both.png").read_bytes().startswith(PNG)
    title = plot_losses([h for h in both if "loss" in h], tmp_path / "train.png")
    assert title.startswith("Training loss") and "train.eval_steps" in title  # how to get the other curve


def test_the_comparison_chart_draws_from_a_report_with_and_without_the_gate(tmp_path: Path):
    entry = {
        "direction": "lower",
        "n": 3,
        "systems": {
            s: {"n": 3, "mean": m, "ci": [m - 0.1, m + 0.1]} for s, m in (("finetuned", 2), ("base", 3))
        },
    }
    report = {"suites": {"heldout": {"metrics": {"bits_per_byte": entry}}}}
    gate = {
        "promote": True,
        "metric": "heldout.bits_per_byte",
        "comparisons": [
            {
                "role": "baseline",
                "against": "base",
                "metric": "heldout.bits_per_byte",
                "n": 3,
                "difference": -1.0,
                "ci": [-1.1, -0.9],
                "required": "> 0",
                "passed": True,
                "note": "",
            }
        ],
    }
    plot_comparison(report, tmp_path / "scores.png")
    plot_comparison(report, tmp_path / "decided.png", gate)
    scores, decided = (tmp_path / "scores.png").read_bytes(), (tmp_path / "decided.png").read_bytes()
    assert scores.startswith(PNG) and decided.startswith(PNG)
    width = lambda png: struct.unpack(">I", png[16:20])[0]  # noqa: E731 -- the PNG header's IHDR width
    assert width(decided) > width(scores)  # one panel more: the gate's
