"""Row filters, datatrove-style: a filter is a small predicate `row -> (keep, reason)` (or
`(keep, reason, detail)`, a dict saying why: the duplicate's cluster, the benchmark it leaks) that
declares the reasons it can give; one loop applies filters in order, stops at the first rejection, counts
every reason (zero included, so reports of different configs line up) and keeps the rejected rows with
their reason.

Used by the clean stage and by Self-Instruct's post-filters: a new filter is a few lines, never a new loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Verdict = tuple[bool, str | None] | tuple[bool, str | None, dict[str, Any]]


@dataclass(frozen=True)
class Filter:
    name: str
    reasons: tuple[str, ...]
    check: Callable[[dict], Verdict]

    def __call__(self, row: dict) -> tuple[bool, str | None, dict[str, Any] | None]:
        keep, reason, *detail = self.check(row)
        if not keep and reason not in self.reasons:
            raise ValueError(f"filter {self.name!r} gave undeclared reason {reason!r}")
        return keep, reason, detail[0] if detail else None


@dataclass
class Filtered:
    kept: list[dict] = field(default_factory=list)
    # input rows plus the `reason` they were dropped for (and its `detail` when the filter gives one)
    rejected: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)


def apply_filters(rows: Iterable[dict], filters: list[Filter], into: Filtered | None = None) -> Filtered:
    """Keep the rows every filter keeps; `into` accumulates over several calls (Self-Instruct rounds)."""
    result = into or Filtered()
    for f in filters:
        for reason in f.reasons:
            result.counts.setdefault(reason, 0)
    for row in rows:
        for check in filters:
            keep, reason, detail = check(row)
            if not keep:
                result.rejected.append({**row, "reason": reason, **({"detail": detail} if detail else {})})
                result.counts[reason] += 1
                break
        else:
            result.kept.append(row)
    return result
