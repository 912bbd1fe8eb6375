"""Row filters, datatrove-style: a filter is a small predicate `row -> (keep, reason)` that declares the
reasons it can give; one loop applies filters in order, stops at the first rejection, counts every reason
(zero included, so reports of different configs line up) and keeps the rejected rows with their reason.

Used by the clean stage and by Self-Instruct's post-filters: a new filter is a few lines, never a new loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Filter:
    name: str
    reasons: tuple[str, ...]
    check: Callable[[dict], tuple[bool, str | None]]

    def __call__(self, row: dict) -> tuple[bool, str | None]:
        keep, reason = self.check(row)
        if not keep and reason not in self.reasons:
            raise ValueError(f"filter {self.name!r} gave undeclared reason {reason!r}")
        return keep, reason


@dataclass
class Filtered:
    kept: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # input rows plus the `reason` they were dropped for
    counts: Counter = field(default_factory=Counter)


def apply_filters(rows: Iterable[dict], filters: list[Filter], into: Filtered | None = None) -> Filtered:
    """Keep the rows every filter keeps; `into` accumulates over several calls (Self-Instruct rounds)."""
    result = into or Filtered()
    for f in filters:
        for reason in f.reasons:
            result.counts.setdefault(reason, 0)
    for row in rows:
        for check in filters:
            keep, reason = check(row)
            if not keep:
                result.rejected.append({**row, "reason": reason})
                result.counts[reason] += 1
                break
        else:
            result.kept.append(row)
    return result
