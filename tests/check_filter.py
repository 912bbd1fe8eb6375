"""`check_filter(filter, record, expected)`, datatrove's test helper, for our row filters
(tasks/common/filtering.py): expected True means the filter keeps the record; a string means it drops the
record for that reason, which must be one of the reasons the filter declares."""

from __future__ import annotations

from typing import Any

from tasks.common.filtering import Filter


def check_filter(filter: Filter, record: dict, expected: bool | str) -> dict[str, Any] | None:
    """Assert what `filter` does with `record`; return the detail it gave for a drop (None if it gave none).

    Calling the filter also checks that a reason it gives is declared (Filter raises otherwise)."""
    if expected is not True and not isinstance(expected, str):
        raise TypeError(f"expected is True (kept) or the reason of a drop, not {expected!r}")
    keep, reason, detail = filter(record)
    if expected is True:
        assert keep, f"filter {filter.name!r} dropped {record!r} for {reason!r}; expected it kept"
        return None
    assert expected in filter.reasons, (
        f"{expected!r} is not a reason filter {filter.name!r} declares {filter.reasons}: the test expects a "
        "drop this filter cannot give"
    )
    assert not keep, f"filter {filter.name!r} kept {record!r}; expected it dropped for {expected!r}"
    assert reason == expected, f"filter {filter.name!r} dropped {record!r} for {reason!r}, not {expected!r}"
    return detail
