"""What clean must keep: decontamination that finds answers, not idioms; structural dedup that respects
different tasks. Golden cases on tiny inline rows, and the rule, item and span of every drop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_config.schema import CleanConfig
from pipeline_config.schema.clean import DecontaminateConfig
from tasks.clean.decontaminate import BenchmarkIndex, Item, humaneval_items
from tests.tasks.test_clean import pair, reasons, run_clean

HELD_INSTRUCTION = (
    "Given the server log in `line`, return a list of the words of `line` written entirely in capital "
    "letters, and count how often each level such as ERROR or WARN occurs in every hour of the day."
)
HELD_ANSWER = '''def log_levels(line):
    """Count the levels of a server log per hour."""
    hours = {}
    for entry in line.splitlines():
        stamp, level = entry.split(" ", 2)[:2]
        hour = int(stamp.split(":")[0])
        per_level = hours.setdefault(hour, {})
        per_level[level] = per_level.get(level, 0) + 1
    return hours
'''


def held_out_index(corpus: list[str], **cfg) -> BenchmarkIndex:
    items = [Item("held_out", "held", HELD_INSTRUCTION), Item("held_out", "held", HELD_ANSWER)]
    return BenchmarkIndex.build(items, DecontaminateConfig(**cfg), corpus)


def test_two_tasks_sharing_a_long_common_phrase_are_both_kept() -> None:
    other = (
        "Return a list of the words of `line` written entirely in capital letters; then join them with "
        "dashes and return the result as one string."
    )
    index = held_out_index([HELD_INSTRUCTION, other])
    assert index.match(other) is None  # one shared 13-gram of 25: a phrase, not the task
    old_rule = held_out_index([], min_overlap=0.01, min_shared_ngrams=1)  # one shared n-gram was enough
    assert old_rule.match(other)[0] == "contaminated_ngram"


def test_a_phrase_many_rows_share_is_not_a_leak_but_a_rare_one_is() -> None:
    held = "Write a Python function `get_params`: Get parameters for this estimator."
    row = f"{held}\ndef get_params(self, deep=True):\n    return {{}}"
    items = [Item("held_out", "held", held)]
    rare = BenchmarkIndex.build(items, DecontaminateConfig(), [held, row])
    reason, detail = rare.match(row)
    assert reason == "contaminated_substring" and detail["span"] == " ".join(held.lower().split())
    common = BenchmarkIndex.build(items, DecontaminateConfig(), [held] + [row] * 12)  # inherited docstring
    assert common.match(row) is None
    assert common.summary()["common_substrings_ignored"] == 1


def test_a_training_row_with_a_held_out_answers_body_is_dropped() -> None:
    leak = HELD_ANSWER.replace("def log_levels(line)", "def levels_per_hour(line)")  # its body, renamed
    leak = "import sys\n\n" + leak + "\n\nprint(levels_per_hour(sys.stdin.read()))\n"
    unrelated = "def add(a, b):\n    return a + b\n"
    index = held_out_index([HELD_INSTRUCTION + HELD_ANSWER, leak, unrelated])
    reason, detail = index.match(f"Count log levels per hour.\n\n{leak}")
    assert reason == "contaminated_ngram"
    assert detail["rule"] == "ngram" and detail["benchmark"] == "held_out" and detail["item"] == "held"
    assert detail["shared_ngrams"] >= detail["item_ngrams"] / 2
    assert "hours = {} for entry in line.splitlines():" in detail["span"]  # the row, from the body on
    assert index.match(unrelated) is None


def test_humaneval_copied_into_many_rows_is_still_a_leak() -> None:
    from tasks.common.benchmarks import humaneval_problems

    problem = humaneval_problems()[0]
    row = "Solve this.\n" + problem["prompt"] + problem["canonical_solution"]
    index = BenchmarkIndex.build(humaneval_items(), DecontaminateConfig(), [row] * 50)
    reason, detail = index.match(row)
    assert reason == "contaminated_substring" and detail["item"] == problem["task_id"]


RENAMED_TASK = "Write a function `count_big(scores)` that returns how many of `scores` exceed 10."
CODE = "def count_big(scores):\n    return sum(1 for s in scores if s > 10)\n"


def test_a_renamed_copy_of_the_same_task_is_dropped(tmp_path: Path) -> None:
    rows = [
        pair("a", RENAMED_TASK, CODE),
        pair(
            "b",
            RENAMED_TASK.replace("count_big", "n_large").replace("scores", "marks"),
            "# again\n"
            + CODE.replace("count_big", "n_large").replace("scores", "marks").replace(" s ", " m "),
        ),
    ]
    _, kept, rejected = run_clean(tmp_path, rows)
    assert [r["id"] for r in kept] == ["a"]
    (dropped,) = rejected
    assert dropped["reason"] == "structural_duplicate"
    assert dropped["detail"] == {"rule": "same_task", "kept": "a", "task_jaccard": 1.0}


def test_the_same_code_for_two_different_instructions_is_kept(tmp_path: Path) -> None:
    other = "A teacher keeps marks in `marks`; write `passed(marks)` giving the number of passing marks."
    code = CODE.replace("count_big", "passed").replace("scores", "marks").replace(" s ", " m ")
    rows = [pair("a", RENAMED_TASK, CODE), pair("b", other, code)]
    report, kept, _ = run_clean(tmp_path, rows)
    assert [r["id"] for r in kept] == ["a", "b"]
    assert report["structural_dedup_policy"] == "same_task"
    _, kept, rejected = run_clean(tmp_path, rows, structural_dedup={"policy": "same_code"})
    assert [r["id"] for r in kept] == ["a"] and rejected[0]["detail"] == {"rule": "same_code", "kept": "a"}


def test_every_drop_names_its_rule_item_and_span(tmp_path: Path) -> None:
    from benchmarks.planted_clean import planted_set

    rows = planted_set(distinct=300, near=20, renamed=10, leaks=6, exact=10, seed=1, held_out_leaks=6)
    _, _, rejected = run_clean(tmp_path, rows, decontaminate={})
    found = set(reasons(rejected).values())
    assert {"contaminated_substring", "duplicate", "structural_duplicate", "near_duplicate"} <= found
    for row in rejected:
        detail = row["detail"]
        assert detail["rule"], row
        if row["reason"].startswith("contaminated_"):
            assert detail["benchmark"] and detail["item"] and detail["span"], row
        else:
            assert detail.get("kept") or detail.get("cluster"), row
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Decontamination (n-grams and phrases common in this corpus are ignored as idioms)" in markdown
    assert "contaminated_substring against humaneval: 6 rows" in markdown
    assert "Structural dedup policy: same_task" in markdown


def test_the_new_keys_are_checked_with_their_names() -> None:
    with pytest.raises(ValidationError, match=r"clean.decontaminate.identifying_chars \(40\) must be >="):
        CleanConfig(decontaminate={"identifying_chars": 40})
    with pytest.raises(ValidationError, match="policy"):
        CleanConfig(structural_dedup={"policy": "by_name"})
    assert CleanConfig(structural_dedup=False).structural_dedup.enabled is False
    assert json.loads(CleanConfig().model_dump_json())["structural_dedup"]["policy"] == "same_task"
