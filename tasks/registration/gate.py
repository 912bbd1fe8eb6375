"""The champion gate: promotion decided from paired evidence on a declared primary metric and guards.

The challenger takes `champion` only when, on `register.primary_metric`, the lower bound of the paired 95%
interval of its gain (challenger - other, per item, in the metric's better direction)
- is above 0 against its base model and every `register.must_beat` baseline,
- is above `register.min_improvement` against the champion, when there is one,
and no guard (`register.guards`) loses to the base beyond its margin: the guard's gain has its lower bound
at -margin or above (non-inferiority: forgetting general coding ability, for instance).

A comparison whose items cannot tell the systems apart (too few items; both systems constant and equal, as
0 of 8 problems passed by both) is undecidable: on the primary metric that refuses promotion, on a guard it
is reported as not checked. Every comparison is written into the decision with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from pipeline_config.metrics import LOWER, direction
from tasks.evaluation.paired import compare
from tasks.evaluation.report import table

Scores = Mapping[str, float]  # item id -> the metric on that item
CHALLENGER = "finetuned"
NAMES = {
    "base": "its base model",
    "echo_input": "the echo baseline",
    "previous_line": "the previous-line baseline",
}


@dataclass(frozen=True)
class Comparison:
    role: str  # "baseline", "champion" or "guard"
    against: str  # the other system: base, echo_input, champion v3
    metric: str
    n: int
    difference: float | None  # mean of challenger - other
    ci: list[float] | None
    required: str  # what the gain's lower bound had to be, e.g. "> 0" or ">= -0.05"
    passed: bool
    note: str = ""  # why it is undecidable, when it is

    def short(self) -> str:
        """The comparison in one cell: `-0.0020 [-0.0026, -0.0015], n 8, lower is better, > 0: passed`."""
        if self.ci is None:
            return self.note
        better = "lower" if direction(self.metric) == LOWER else "higher"
        verdict = ("passed" if self.passed else "failed") + (f" ({self.note})" if self.note else "")
        return (
            f"{self.difference:+.4f} [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}], n {self.n}, {better} is better, "
            f"gain bound {self.required}: {verdict}"
        )

    def line(self) -> str:
        if self.ci is None:
            return f"{self.metric} vs {self.against}: {self.note}"
        better = "lower" if direction(self.metric) == LOWER else "higher"
        verdict = "passed" if self.passed else "failed"
        note = f"; {self.note}" if self.note else ""
        return (
            f"{self.metric} vs {self.against} ({self.role}, {better} is better): challenger - "
            f"{self.against} = {self.difference:+.4f}, paired 95% interval [{self.ci[0]:+.4f}, "
            f"{self.ci[1]:+.4f}] on {self.n} items, gain lower bound required {self.required}: "
            f"{verdict}{note}"
        )


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str  # the primary metric
    comparisons: list[dict] = field(default_factory=list)
    champion_version: str | None = None

    def record(self) -> dict:
        return asdict(self)


def _compare(role, against, metric, ours: Scores, theirs: Scores, threshold: float, strict: bool, seed):
    paired = sorted(set(ours) & set(theirs))
    if not paired:
        return Comparison(
            role, against, metric, 0, None, None, "", False, f"no items scored for both: {role} unchecked"
        )
    result = compare([ours[i] for i in paired], [theirs[i] for i in paired], direction(metric), seed)
    gain = result["improvement_low"]
    passed = gain > threshold if strict else gain >= threshold
    required = f"{'>' if strict else '>='} {threshold:g}"
    note = f"undecidable: {result['undecidable']}" if result["undecidable"] else ""
    return Comparison(
        role,
        against,
        metric,
        result["n"],
        result["difference"],
        result["ci"],
        required,
        passed and not note,
        note,
    )


def decide(
    evidence: Mapping[str, Mapping[str, Scores]],
    primary: str,
    must_beat: Sequence[str] = (),
    min_improvement: float = 0.0,
    guards: Sequence[tuple[str, float]] = (),
    champion: Scores | None = None,
    champion_version: str | None = None,
    seed: int = 0,
) -> Decision:
    """`evidence[metric][system]`: per-item scores of the challenger ("finetuned") and the other systems on
    the primary metric and every guard metric; `champion`: the champion's per-item primary scores."""
    ours = evidence.get(primary, {}).get(CHALLENGER)
    if not ours:
        return Decision(False, f"the challenger has no per-item {primary} scores: it cannot win", primary)
    comparisons = []
    for baseline in dict.fromkeys(["base", *must_beat]):
        theirs = evidence[primary].get(baseline) or {}
        comparisons.append(_compare("baseline", baseline, primary, ours, theirs, 0.0, True, seed))
    if champion is not None:
        against = f"champion v{champion_version}"
        comparisons.append(
            _compare("champion", against, primary, ours, champion, min_improvement, True, seed)
        )
    for metric, margin in guards:
        mine, base = (
            evidence.get(metric, {}).get(CHALLENGER) or {},
            evidence.get(metric, {}).get("base") or {},
        )
        guard = _compare("guard", "base", metric, mine, base, -margin, False, seed)
        if guard.ci and margin < (guard.ci[1] - guard.ci[0]) / 2 and not guard.note:
            # a model equal to its base has its lower bound near -half-width: it fails about half the time
            half = (guard.ci[1] - guard.ci[0]) / 2
            guard = replace(guard, note=f"margin {margin:g} is below the interval's half-width {half:.4f}")
        if guard.note.startswith("undecidable"):  # no evidence of forgetting either way: said, not blocking
            guard = replace(guard, passed=True, note=guard.note + " (not checked)")
        comparisons.append(guard)
    failed = [c for c in comparisons if not c.passed]
    if failed:
        first = failed[0]
        what = {
            "baseline": f"does not beat {NAMES.get(first.against, first.against)}",
            "champion": f"does not beat {first.against} by register.min_improvement",
            "guard": "a guard regressed beyond its margin",
        }[first.role]
        reason = f"{what}: {first.line()}"
    elif champion is None:
        beaten = " and ".join(NAMES.get(c.against, c.against) for c in comparisons if c.role == "baseline")
        reason = f"no champion yet; it beats {beaten} on {primary}, and no guard regressed"
    else:
        reason = (
            f"beats the champion v{champion_version} and every baseline on {primary}, and no guard regressed"
        )
    return Decision(not failed, reason, primary, [asdict(c) for c in comparisons], champion_version)


GATE_HEADER = [
    "role",
    "against",
    "metric",
    "n",
    "challenger - other",
    "paired 95% CI",
    "gain bound",
    "result",
]


def gate_table(record: Mapping) -> str:
    """A decision's comparisons (`Decision.record()`), one row each: the registration report's table and
    the MLflow run description's."""
    rows = [
        [
            c["role"],
            c["against"],
            c["metric"],
            c["n"],
            "" if c["difference"] is None else f"{c['difference']:+.4f}",
            "" if c["ci"] is None else f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]",
            c["required"],
            ("passed" if c["passed"] else "failed") + (f" ({c['note']})" if c["note"] else ""),
        ]
        for c in record["comparisons"]
    ]
    return table(GATE_HEADER, rows) if rows else ""


def from_record(record: Mapping) -> Decision | None:
    """A decision stored on a version (a retry after a crash keeps it); None when it is of an older shape."""
    try:
        return Decision(**record)
    except TypeError:
        return None
