"""tests/check_filter.py: it passes on what a filter does and fails on anything else, an undeclared
reason included."""

from __future__ import annotations

import pytest

from tasks.common.filtering import Filter
from tests.check_filter import check_filter

SHORT = Filter(
    "short", ("too_long",), lambda row: (len(row["text"]) <= 3, "too_long", {"n": len(row["text"])})
)


def test_check_filter_passes_on_what_the_filter_does() -> None:
    assert check_filter(SHORT, {"text": "abc"}, True) is None
    assert check_filter(SHORT, {"text": "abcd"}, "too_long") == {"n": 4}


@pytest.mark.parametrize(
    ("text", "expected", "message"),
    [
        ("abcd", True, "expected it kept"),
        ("abc", "too_long", "expected it dropped"),
        ("abcd", "too_short", "not a reason filter 'short' declares"),
    ],
)
def test_check_filter_fails_on_anything_else(text: str, expected: bool | str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_filter(SHORT, {"text": text}, expected)


def test_check_filter_reports_a_reason_the_filter_does_not_declare() -> None:
    sloppy = Filter("sloppy", ("a",), lambda row: (False, "b"))
    with pytest.raises(ValueError, match="undeclared reason 'b'"):
        check_filter(sloppy, {}, "a")
    with pytest.raises(TypeError):
        check_filter(SHORT, {"text": "x"}, False)
