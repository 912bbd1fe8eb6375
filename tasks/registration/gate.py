"""The champion gate: a paired comparison on the same examples, not two means from different test sets.

The challenger takes `champion` only when
- it beats each baseline of `register.must_beat` (mean of the gate metric on this evaluation set): the base
  model it was fine-tuned from, and where asked the echo baseline (a model that only repeats the prompt's
  input has learned nothing worth serving), and
- there is no champion yet, or the paired bootstrap interval of (challenger - champion) per example, on
  this evaluation set, has its lower bound above `register.min_improvement`.
Noise (an interval that straddles the margin) keeps the champion. The champion's per-example scores come
from its own evaluation when it was scored on this same set, else from scoring it again here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from tasks.evaluation.metrics import CI_LEVEL, bootstrap_ci

Scores = Mapping[str, float]  # example id -> the gate metric on that example


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    challenger_mean: float | None
    base_mean: float | None
    champion_version: str | None = None
    champion_mean: float | None = None
    baseline_means: dict[str, float] | None = None  # every baseline it had to beat (base among them)
    paired_n: int = 0
    difference_mean: float | None = None
    difference_ci: list[float] | None = None

    def record(self) -> dict:
        return asdict(self)


def mean(scores: Scores) -> float:
    return sum(scores.values()) / len(scores)


BASELINE_NAMES = {"base": "its base model", "echo_input": "the echo baseline"}


def decide(
    challenger: Scores,
    baselines: Mapping[str, Scores],
    champion: Scores | None,
    metric: str,
    margin: float,
    champion_version: str | None = None,
    seed: int = 0,
) -> Decision:
    if not challenger:
        return Decision(
            False, f"the challenger has no per-example {metric} scores: it cannot win", metric, None, None
        )
    ours = mean(challenger)
    means = {name: mean(scores) for name, scores in baselines.items() if scores}
    common = dict(metric=metric, challenger_mean=ours, base_mean=means.get("base"), baseline_means=means)
    for name, theirs in means.items():
        if ours <= theirs:
            return Decision(
                False, f"does not beat {BASELINE_NAMES[name]} ({metric} {ours:.4f} <= {theirs:.4f})", **common
            )
    if champion is None:
        beaten = " and ".join(BASELINE_NAMES[n] for n in means) or "no baseline"
        return Decision(True, f"no champion yet, and it beats {beaten}", **common)
    paired = sorted(set(challenger) & set(champion))
    if not paired:
        return Decision(False, "no examples scored for both challenger and champion", **common)
    differences = [challenger[i] - champion[i] for i in paired]
    low, high = bootstrap_ci(differences, seed)
    difference = sum(differences) / len(differences)
    promote = low > margin
    verdict = "above" if promote else "not above"
    reason = (
        f"paired {CI_LEVEL:.0%} interval of challenger - champion v{champion_version} "
        f"on {len(paired)} examples [{low:.4f}, {high:.4f}] is {verdict} the margin {margin}"
    )
    return Decision(
        promote,
        reason,
        champion_version=champion_version,
        champion_mean=sum(champion[i] for i in paired) / len(paired),
        paired_n=len(paired),
        difference_mean=difference,
        difference_ci=[low, high],
        **common,
    )
