"""tasks.synthesize.filters: Self-Instruct's filters on a generated instruction (length in words, the
blacklist, the first character), each checked alone with check_filter (tests/check_filter.py) and together
through the shared loop (tasks.common.filtering)."""

from __future__ import annotations

import pytest

from pipeline_config.schema import SelfInstructConfig
from tasks.common.filtering import apply_filters
from tasks.synthesize.filters import instruction_filters
from tests.check_filter import check_filter


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("Sort it.", "too_few_words"),
        ("word " * 151, "too_many_words"),
        ("Draw a red circle on the canvas.", "blacklisted"),
        ("Read the numbers from a FILE and add them.", "blacklisted"),
        ("Plot the residuals of a linear regression.", "blacklisted"),
        ("Go to the website and fetch the title.", "blacklisted"),
        ("Create a flowchart of the sorting steps.", "blacklisted"),
        ("- Write a function that adds two numbers.", "starts_with_punctuation"),
        ("**Write** a function that adds numbers.", "starts_with_punctuation"),
        ("Écris une fonction qui additionne deux nombres.", "starts_non_ascii"),
        ("Write a function that maps each word to its length.", "blacklisted"),  # a blunt list, as theirs
        ("Write a function that returns a mapping from words to counts.", True),
        ("Sort a list of numbers.", True),
    ],
)
def test_instruction_filters(instruction: str, expected: bool | str) -> None:
    filters = instruction_filters(SelfInstructConfig())
    row = {"instruction": instruction}
    # the filter that declares the reason drops the row; every other filter keeps it
    for f in filters:
        check_filter(f, row, expected if expected in f.reasons else True)
    result = apply_filters([row], filters)
    assert (result.rejected[0]["reason"] if result.rejected else True) == expected
    assert set(result.counts) == {
        "too_few_words",
        "too_many_words",
        "blacklisted",
        "starts_with_punctuation",
        "starts_non_ascii",
    }


def test_blacklist_names_the_word() -> None:
    (blacklist,) = [f for f in instruction_filters(SelfInstructConfig()) if f.name == "blacklist"]
    assert check_filter(blacklist, {"instruction": "Read the numbers from a FILE."}, "blacklisted") == {
        "word": "file"
    }


def test_word_bounds_are_configurable() -> None:
    cfg = SelfInstructConfig(min_words=1, max_words=2)
    (words,) = [f for f in instruction_filters(cfg) if f.name == "word_count"]
    check_filter(words, {"instruction": "Sort."}, True)
    check_filter(words, {"instruction": "Sort this list."}, "too_many_words")
    check_filter(words, {"instruction": ""}, "too_few_words")
