"""The evaluation's metrics by suite: the one registry the schema validates gate metrics against and the
evaluate stage scores, so a metric named in a profile is one the evaluation computes.

A metric is named `suite.metric` (`heldout.bits_per_byte`, `humaneval.pass_at_1`). Each suite is scored per
item for every system it lists, on the same items; `direction` says which way is better.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.common.benchmarks import BENCHMARKS

HIGHER, LOWER = "higher", "lower"

# heldout: the held-out split's rows. Likelihood of the reference (every model), text metrics of greedy
# generations (every system), and the same text metrics on what the system wrote beyond what the prompt gave
# (`_written`: the signature or input the reference starts with is removed from both sides).
TEXT = ("rougeL", "rouge1", "rouge2", "rougeLsum", "exact_match", "edit_similarity")
WRITTEN = ("rougeL_written", "edit_similarity_written")
LIKELIHOOD = ("nll", "bits_per_byte")
COMPLETION = ("exact_match", "edit_similarity")

SUITES: dict[str, dict[str, str]] = {
    "heldout": dict.fromkeys(LIKELIHOOD, LOWER) | dict.fromkeys(TEXT + WRITTEN, HIGHER),
    "completion": dict.fromkeys(COMPLETION, HIGHER),  # next line of held-out code
    "fim": dict.fromkeys(COMPLETION, HIGHER),  # fill-in-the-middle of held-out code
    # the pass@k benchmarks (tasks/common/benchmarks.py): pass_at_<k> for the profile's k (pass_k_metrics)
    **{name: {} for name in BENCHMARKS},
}
PASS_K_SUITES = tuple(BENCHMARKS)  # humaneval, sklearn_doctests

# the systems besides the fine-tuned model, and the suites (and metrics) that score them
BASELINES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "base": dict.fromkeys(SUITES),  # None: every metric of the suite
    "echo_input": {"heldout": TEXT + WRITTEN},  # the prompt's input as the answer
    "previous_line": {"completion": COMPLETION, "fim": COMPLETION},  # the prefix's last line repeated
}


@dataclass(frozen=True)
class MetricName:
    suite: str
    metric: str

    def __str__(self) -> str:
        return f"{self.suite}.{self.metric}"


def pass_k_metrics(ks: list[int]) -> dict[str, str]:
    return {f"pass_at_{k}": HIGHER for k in ks}


def parse(name: str, suites: dict[str, dict[str, str]] = SUITES) -> MetricName:
    """`suite.metric` checked against `suites` (the evaluation's metrics); the error lists what exists."""
    suite, _, metric = name.partition(".")
    if suite not in suites:
        raise ValueError(f"unknown suite {suite!r} in metric {name!r}; suites: {', '.join(suites)}")
    if metric not in suites[suite]:
        known = ", ".join(suites[suite]) or "none (the suite is not enabled)"
        raise ValueError(f"the {suite} suite has no metric {metric!r}; it computes: {known}")
    return MetricName(suite, metric)


def direction(name: MetricName | str) -> str:
    metric = name.metric if isinstance(name, MetricName) else str(name).partition(".")[2]
    if metric.startswith("pass_at_"):
        return HIGHER
    for suite in SUITES.values():
        if metric in suite:
            return suite[metric]
    raise ValueError(f"unknown metric {name!r}")


def scores_baseline(baseline: str, name: MetricName) -> bool:
    """Whether `baseline` is scored on this metric (the echo has no likelihood, for instance)."""
    if name.suite not in BASELINES[baseline]:
        return False
    metrics = BASELINES[baseline][name.suite]
    return metrics is None or name.metric in metrics
