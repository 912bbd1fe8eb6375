"""Tests for tasks.synthesize: docstring pairs, the reply parser, Self-Instruct's filters and loop and
OSS-Instruct (with a scripted teacher), execution verification in the sandbox, and the whole stage with an
OpenAI-compatible teacher served from a loopback HTTP server."""

from __future__ import annotations

import json
import re
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline_config import PipelineConfig, load_config
from pipeline_config.schema import (
    OssInstructConfig,
    SandboxConfig,
    SelfInstructConfig,
    SynthesizeConfig,
    TeacherConfig,
    VerifyConfig,
)
from tasks import synthesize
from tasks.common.filtering import apply_filters
from tasks.common.io import workspace_path
from tasks.common.sandbox import Result
from tasks.common.stage import StageOutput, cached_output, read_report
from tasks.common.teacher import TeacherError, make_teacher
from tasks.common.teacher.cache import CallCache
from tasks.common.teacher.remote import RemoteTeacher
from tasks.synthesize.docstring_pairs import SUMMARY_MAX_CHARS, docstring_pairs, docstring_summary, pair
from tasks.synthesize.filters import instruction_filters
from tasks.synthesize.oss_instruct import oss_instruct, oss_instruct_prompt, snippet
from tasks.synthesize.pairs import TooFewRecords, synthesize_pairs
from tasks.synthesize.parsing import Task, parse_task, parse_tasks
from tasks.synthesize.self_instruct import SEED_TASKS, load_seed_tasks, pick_examples, self_instruct
from tasks.synthesize.verify import classify, precheck, verify

REPO = Path(__file__).resolve().parents[2]

# The sandbox isolates when it can (root, namespaces); elsewhere these tests run it on rlimits alone.
VERIFY = VerifyConfig(timeout_s=20, workers=2)

# --------------------------------------------------------------------------------------------------------
# docstring pairs
# --------------------------------------------------------------------------------------------------------


def test_docstring_summary_first_paragraph_collapsed() -> None:
    doc = """
        Compute the   arithmetic mean
        of the values.

        Parameters
        ----------
        values : list of float
    """
    assert docstring_summary(doc) == "Compute the arithmetic mean of the values."


def test_docstring_summary_capped_and_empty() -> None:
    assert docstring_summary("word " * 500) == ("word " * 120)[:SUMMARY_MAX_CHARS]
    assert len(docstring_summary("word " * 500)) == SUMMARY_MAX_CHARS == 600
    assert docstring_summary("   \n  ") == ""


RECORDS = [
    {
        "id": "rec-row-norms",
        "name": "sklearn.utils.extmath.row_norms",
        "kind": "function",
        "signature": "def row_norms(X, squared=False):",
        "docstring": "Row-wise (squared) Euclidean norm of X.\n\n    Parameters\n    ----------\n"
        "    X : array\n",
        "code": 'def row_norms(X, squared=False):\n    """Row-wise (squared) Euclidean norm of X."""\n'
        "    norms = (X * X).sum(axis=1)\n    return norms if squared else norms ** 0.5\n",
        "code_without_docstring": "def row_norms(X, squared=False):\n    norms = (X * X).sum(axis=1)\n"
        "    return norms if squared else norms ** 0.5\n",
        "path": "sklearn/utils/extmath.py",
        "line_start": 50,
        "line_end": 75,
        "package_version": "1.9.1",
    },
    {
        "id": "rec-scaler",
        "name": "sklearn.preprocessing.StandardScaler",
        "kind": "class",
        "signature": "class StandardScaler(TransformerMixin, BaseEstimator):",
        "docstring": "Standardize features by removing the mean\nand scaling to unit variance.",
        "code": "class StandardScaler(TransformerMixin, BaseEstimator):\n    pass\n",
        "code_without_docstring": "class StandardScaler(TransformerMixin, BaseEstimator):\n    pass\n",
        "path": "sklearn/preprocessing/_data.py",
        "line_start": 700,
        "line_end": 1100,
        "package_version": "1.9.1",
    },
    {
        "id": "rec-fit",
        "name": "sklearn.preprocessing.StandardScaler.fit",
        "kind": "method",
        "signature": "def fit(self, X, y=None):",
        "docstring": "Compute the mean and std to be used for later scaling.",
        "code": "def fit(self, X, y=None):\n    return self\n",
        "code_without_docstring": "def fit(self, X, y=None):\n    return self\n",
        "path": "sklearn/preprocessing/_data.py",
        "line_start": 800,
        "line_end": 820,
        "package_version": "1.9.1",
    },
]


def test_docstring_pairs_exact() -> None:
    rows = list(docstring_pairs(RECORDS, None))
    assert [(r["instruction"], r["input"], r["output"]) for r in rows] == [
        (
            "Write a Python function `row_norms`: Row-wise (squared) Euclidean norm of X.",
            "def row_norms(X, squared=False):",
            RECORDS[0]["code_without_docstring"],
        ),
        (
            "Write a Python class `StandardScaler`: Standardize features by removing the mean and scaling to "
            "unit variance.",
            "class StandardScaler(TransformerMixin, BaseEstimator):",
            RECORDS[1]["code_without_docstring"],
        ),
        (
            "Write a Python function `fit`: Compute the mean and std to be used for later scaling.",
            "def fit(self, X, y=None):",
            "def fit(self, X, y=None):\n    return self\n",
        ),
    ]
    assert all(r["source"] == "docstring" and r["id"].startswith("docstring-") for r in rows)
    assert len({r["id"] for r in rows}) == 3
    assert rows[0]["metadata"] == {
        "mode": "docstring",
        "verified": None,  # no teacher tests: not run, and marked as such
        "verification": "unverified",
        "qualname": "sklearn.utils.extmath.row_norms",
        "path": "sklearn/utils/extmath.py",
        "lines": [50, 75],
        "package_version": "1.9.1",
    }
    # the id is a content hash: the same pair always gets the same id
    assert (
        rows[0]["id"] == pair(rows[0]["instruction"], rows[0]["input"], rows[0]["output"], "docstring")["id"]
    )


def test_docstring_pairs_limit_and_skips_empty_docstrings() -> None:
    records = [{**RECORDS[0], "docstring": "  \n "}, *RECORDS]
    assert [r["metadata"]["qualname"] for r in docstring_pairs(records, 2)] == [
        "sklearn.utils.extmath.row_norms",
        "sklearn.preprocessing.StandardScaler",
    ]
    assert len(list(docstring_pairs(records, None))) == 3
    assert len(list(docstring_pairs(records, 1))) == 1


# --------------------------------------------------------------------------------------------------------
# parse_task: however the teacher dresses its reply
# --------------------------------------------------------------------------------------------------------

SOLUTION = "def rev(xs):\n    return xs[::-1]"
TESTS = "assert rev([1, 2]) == [2, 1]"
WANT = Task("Reverse a list.", "xs = [1, 2]", SOLUTION, TESTS)


@pytest.mark.parametrize(
    "reply",
    [
        # a completion model continuing the prompt's "Instruction:"
        f" Reverse a list.\nInput: xs = [1, 2]\nSolution:\n```python\n{SOLUTION}\n```\nTests:\n```python\n"
        f"{TESTS}\n```\n",
        # a chat model: preamble, markdown bold labels
        f"Sure! Here is a new task:\n\n**Instruction:** Reverse a list.\n**Input:** xs = [1, 2]\n"
        f"**Solution:**\n```python\n{SOLUTION}\n```\n**Tests:**\n```python\n{TESTS}\n```\nHope this helps!",
        # the preamble on the instruction's own line, no label
        f"Sure! Here is a new task: Reverse a list.\nInput: xs = [1, 2]\nSolution:\n```py\n{SOLUTION}\n```\n"
        f"Tests:\n```\n{TESTS}\n```",
        # headings, unfenced code
        f"Certainly.\n\n### Instruction\nReverse a list.\n\n### Input\nxs = [1, 2]\n\n"
        f"### Solution\n{SOLUTION}"
        f"\n\n### Tests\n{TESTS}\n",
        # Magicoder's bracketed sections
        f"[Problem Description]\nReverse a list.\n\n[Input]\nxs = [1, 2]\n\n"
        f"[Solution]\n```python\n{SOLUTION}\n"
        f"```\n\n[Tests]\n```python\n{TESTS}\n```",
        # the tests written inside the solution's block
        f"Reverse a list.\nInput: xs = [1, 2]\nSolution:\n```python\n{SOLUTION}\n\n{TESTS}\n```",
        # "Output" and "Test" for the sections, the solution under "Input"'s neighbour
        f"Instruction: Reverse a list.\nInput: xs = [1, 2]\nOutput:\n```python\n{SOLUTION}\n```\nTest:\n"
        f"```python\n{TESTS}\n```",
    ],
)
def test_parse_task_costumes(reply: str) -> None:
    assert parse_task(reply) == WANT


def test_parse_task_chat_preamble_never_reaches_the_instruction() -> None:
    for opener in ("Sure! Here is a new task:", "Of course. Here's a new task:", "Okay! Here is one:"):
        got = parse_task(f"{opener} Reverse a list.\nSolution:\n{SOLUTION}\nTests:\n{TESTS}")
        assert got is not None and got.instruction == "Reverse a list."


def test_parse_task_stops_at_the_next_task() -> None:
    reply = (
        f"Reverse a list.\nInput: xs\n"
        f"Solution:\n```python\n{SOLUTION}\n```\nTests:\n```python\n{TESTS}\n```\n"
        "\n### Task 5\nInstruction: Other.\nInput:\nSolution:\n```python\nother()\n```"
    )
    got = parse_task(reply)
    assert got == Task("Reverse a list.", "xs", SOLUTION, TESTS)
    # a repeated label ends the task too
    assert parse_task(f"Instruction: A b c.\nSolution:\n{SOLUTION}\nInstruction: Other.") == Task(
        "A b c.", "", SOLUTION, ""
    )


def test_parse_task_labels_inside_code_are_code() -> None:
    code = "def f(x):\n    # Input: x\n    # Tests: none\n    return x"
    got = parse_task(
        f"Identity.\nSolution:\n```python\n{code}\n```\nTests:\n```python\nassert f(1) == 1\n```"
    )
    assert got == Task("Identity.", "", code, "assert f(1) == 1")


def test_parse_task_solution_under_input() -> None:
    got = parse_task(f"Reverse a list.\nInput:\n```python\n{SOLUTION}\n```\nTests:\n```python\n{TESTS}\n```")
    assert got == Task("Reverse a list.", "", SOLUTION, TESTS)


@pytest.mark.parametrize("none", ["(none)", "None", "n/a", "", "`none`"])
def test_parse_task_empty_inputs(none: str) -> None:
    got = parse_task(f"Reverse a list.\nInput: {none}\nSolution:\n{SOLUTION}")
    assert got is not None and got.input == ""


@pytest.mark.parametrize(
    "reply",
    [
        "Reverse a list.\nInput: xs",  # no solution
        "Reverse a list.\nInput: xs\nSolution:   \n",  # empty solution
        "Instruction:   \nInput: xs\nSolution: x",  # empty instruction
        "lorem ipsum dolor sit amet",
        "",
    ],
)
def test_parse_task_rejects_incomplete(reply: str) -> None:
    assert parse_task(reply) is None


def test_parse_task_without_continuation_needs_a_label() -> None:
    assert parse_task(f"Sure, happy to help.\nSolution:\n{SOLUTION}", continuation=False) is None


# a completion model continuing its list of tasks until max_new_tokens: two complete tasks, a third cut
SORT = "def sort_desc(xs):\n    return sorted(xs, reverse=True)"
SORT_TESTS = "assert sort_desc([1, 3, 2]) == [3, 2, 1]"
LIST_CUT = (
    f" Reverse a list.\nInput: xs = [1, 2]\nSolution:\n```python\n{SOLUTION}\n```\nTests:\n```python\n"
    f"{TESTS}\n```\n\n### Task 4\nInstruction: Sort numbers in descending order.\nSolution:\n```python\n"
    f"{SORT}\n```\nTests:\n```python\n{SORT_TESTS}\n```\n\n### Task 5\nInstruction: Count the vowels of"
)


@pytest.mark.parametrize(
    ("cut_at", "want_tasks"),
    [
        ("Count the vowels of", 2),  # in the third task's instruction: no solution yet
        ("reverse=True)", 1),  # inside the second task's solution: its code fence is still open
        ("[3, 2, 1]", 1),  # inside the second task's tests
        ("### Task 4", 1),  # on the next task's heading
    ],
)
def test_parse_tasks_keeps_complete_tasks_and_counts_the_cut_one(cut_at: str, want_tasks: int) -> None:
    reply = LIST_CUT[: LIST_CUT.index(cut_at) + len(cut_at)]
    tasks, problems = parse_tasks(reply)
    complete = [WANT, Task("Sort numbers in descending order.", "", SORT, SORT_TESTS)]
    assert tasks == complete[:want_tasks]
    assert [reason for reason, _ in problems] == ["truncated"]
    assert reply.endswith(problems[0][1])  # the cut piece, named
    assert parse_task(reply) == WANT  # the first task alone, as before


def test_parse_tasks_single_task_cut_mid_code_is_truncated_not_a_task() -> None:
    # without the open fence it would be a task whose cut solution fails verification as a syntax error
    reply = "Reverse a list.\nSolution:\n```python\ndef rev(xs):\n    return xs["
    assert parse_tasks(reply) == ([], [("truncated", reply)])
    assert parse_tasks(GARBAGE) == ([], [("unparseable", GARBAGE)])
    assert parse_tasks(LIST_CUT, max_tasks=1) == ([WANT], [])  # OSS-Instruct: only the first counts
    # an unparseable piece before the last is not "truncated": the teacher wrote it whole
    broken = f"Instruction: Missing code.\n### Task 4\nInstruction: Reverse a list.\nSolution:\n{SOLUTION}"
    tasks, problems = parse_tasks(broken)
    assert [t.instruction for t in tasks] == ["Reverse a list."]
    assert [reason for reason, _ in problems] == ["unparseable"]


# --------------------------------------------------------------------------------------------------------
# Self-Instruct's filters (through the shared loop)
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instruction", "reason"),
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
        ("Write a function that returns a mapping from words to counts.", None),
        ("Sort a list of numbers.", None),
    ],
)
def test_instruction_filters(instruction: str, reason: str | None) -> None:
    result = apply_filters([{"instruction": instruction}], instruction_filters(SelfInstructConfig()))
    assert (result.rejected[0]["reason"] if result.rejected else None) == reason
    assert set(result.counts) == {
        "too_few_words",
        "too_many_words",
        "blacklisted",
        "starts_with_punctuation",
        "starts_non_ascii",
    }


def test_word_bounds_are_configurable() -> None:
    cfg = SelfInstructConfig(min_words=1, max_words=2)
    result = apply_filters(
        [{"instruction": "Sort."}, {"instruction": "Sort this list."}], instruction_filters(cfg)
    )
    assert [r["instruction"] for r in result.kept] == ["Sort."]
    assert result.counts["too_many_words"] == 1


# --------------------------------------------------------------------------------------------------------
# Seed tasks and the in-context mix
# --------------------------------------------------------------------------------------------------------


def test_shipped_seed_tasks() -> None:
    seeds = load_seed_tasks(SEED_TASKS)
    assert len(seeds) >= 25
    assert len({s["id"] for s in seeds}) == len(seeds)
    assert len({s["instruction"] for s in seeds}) == len(seeds)
    assert sum("sklearn" in s["output"] + s["tests"] for s in seeds) >= 5
    for s in seeds:
        assert precheck(s["output"], s["tests"]) is None, s["id"]  # parse, assert, use the solution


def test_pure_python_seed_tasks_pass_their_tests_in_the_sandbox() -> None:
    seeds = [s for s in load_seed_tasks(SEED_TASKS) if "sklearn" not in s["output"] + s["tests"]]
    verdicts = verify([(s["output"], s["tests"]) for s in seeds], VERIFY)
    assert [v.kind for v in verdicts] == ["passed"] * len(seeds)


@pytest.mark.slow
def test_scikit_learn_seed_tasks_pass_their_tests_in_the_sandbox() -> None:
    seeds = [s for s in load_seed_tasks(SEED_TASKS) if "sklearn" in s["output"] + s["tests"]]
    verdicts = verify([(s["output"], s["tests"]) for s in seeds], VERIFY.model_copy(update={"timeout_s": 60}))
    assert [(s["id"], v.kind) for s, v in zip(seeds, verdicts, strict=True)] == [
        (s["id"], "passed") for s in seeds
    ]


def test_seed_tasks_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"id": "a", "instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"task 1 .* lacks \['tests'\]"):
        load_seed_tasks(path)
    path.write_text("")
    with pytest.raises(ValueError, match="holds no tasks"):
        load_seed_tasks(path)


def test_pick_examples_mixes_seed_and_generated_as_self_instruct() -> None:
    import random

    seeds = [{"id": f"s{i}"} for i in range(30)]
    generated = [{"id": f"g{i}"} for i in range(5)]
    rng = random.Random(0)
    mix = pick_examples(rng, seeds, generated, 8)
    assert sorted(e["id"][0] for e in mix) == ["g"] * 2 + ["s"] * 6  # 6 seed + 2 generated of 8
    assert len({e["id"] for e in mix}) == 8
    assert [e["id"][0] for e in pick_examples(rng, seeds, [], 8)] == ["s"] * 8
    assert sorted(e["id"][0] for e in pick_examples(rng, seeds, generated, 3)) == ["g", "s", "s"]
    assert sorted(e["id"][0] for e in pick_examples(rng, seeds, generated[:1], 16)) == ["g"] + ["s"] * 15


# --------------------------------------------------------------------------------------------------------
# Execution verification
# --------------------------------------------------------------------------------------------------------

ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize(
    ("solution", "tests", "kind"),
    [
        (ADD, "assert add(2, 3) == 5", "passed"),
        (ADD, "assert add(2, 2) == 5", "assertion"),
        (ADD, "assert add(1, 1) == 2\nadd(1)", "crash"),  # TypeError
        ("def add(a, b):\n    return a / 0\n", "assert add(1, 2) == 3", "crash"),
        ("def add(a, b)\n    return a + b\n", "assert add(1, 2) == 3", "syntax_error"),
        (ADD, "assert add(1, 2) ==", "syntax_error"),
        (ADD, "exec('def f(:')\nassert add(1, 2) == 3", "syntax_error"),  # raised while running
        ("def add(a, b):\n    while True:\n        pass\n", "assert add(1, 2) == 3", "timeout"),
        (ADD, "", "no_tests"),
        (ADD, "print(add(1, 2))", "no_tests"),
        (ADD, "assert True\nassert 1 + 1 == 2", "no_tests"),  # checks nothing of the solution
        (ADD, "def add(a, b):\n    return 3\n\nassert add(1, 2) == 3", "no_tests"),  # tests its own copy
    ],
)
def test_verify_classifies(solution: str, tests: str, kind: str) -> None:
    cfg = VERIFY.model_copy(update={"timeout_s": 2.0, "cpu_s": 2})
    (verdict,) = verify([(solution, tests)], cfg)
    assert verdict.kind == kind, verdict.detail
    assert verdict.passed == (kind == "passed")


def test_classify_cpu_limit_is_a_timeout_and_other_signals_crash() -> None:
    assert classify(Result("killed", 128 + 24, "", "", 1.0, True)).kind == "timeout"  # SIGXCPU
    assert classify(Result("killed", 128 + 9, "", "", 1.0, True)).kind == "crash"
    assert classify(Result("failed", 1, "", "Traceback...\nMemoryError", 1.0, True)).kind == "crash"


def test_verify_runs_in_order_and_in_parallel() -> None:
    tasks = [(ADD, f"assert add({i}, 1) == {i + 1 if i % 2 else 0}") for i in range(6)]
    kinds = [v.kind for v in verify(tasks, VERIFY)]
    assert kinds == ["assertion", "passed", "assertion", "passed", "assertion", "passed"]


def test_verify_refuses_without_isolation_unless_asked(monkeypatch) -> None:
    from tasks.common import sandbox

    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} here")
    with pytest.raises(sandbox.SandboxUnavailable, match="sandbox.backend: none"):
        verify([(ADD, "assert add(1, 2) == 3")], VerifyConfig())
    # tasks that never reach the sandbox need no isolation
    assert [v.kind for v in verify([(ADD, "")], VerifyConfig())] == ["no_tests"]
    # the stage's explicit opt-in runs them, unisolated
    with sandbox.stage_backend("none"):
        assert [v.kind for v in verify([(ADD, "assert add(1, 2) == 3")], VerifyConfig())] == ["passed"]


# --------------------------------------------------------------------------------------------------------
# Self-Instruct with a scripted teacher
# --------------------------------------------------------------------------------------------------------

SEED_TASKS_FIXTURE = [
    {
        "id": "s1",
        "instruction": "Write a Python function that counts how many vowels appear in a string.",
        "input": "",
        "output": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())",
        "tests": "assert count_vowels('Hello') == 2",
    },
    {
        "id": "s2",
        "instruction": "Write a function that reverses the order of the words in a sentence.",
        "input": "sentence = 'a b'",
        "output": "def reverse_words(s):\n    return ' '.join(s.split()[::-1])",
        "tests": "assert reverse_words('a b') == 'b a'",
    },
    {
        "id": "s3",
        "instruction": "Create a function that returns the largest element of a list of numbers.",
        "input": "",
        "output": "def largest(xs):\n    return max(xs)",
        "tests": "assert largest([1, 3, 2]) == 3",
    },
]
MERGE = (
    "def merge(a, b):\n    out = []\n    while a and b:\n"
    "        out.append((a if a[0] < b[0] else b).pop(0))\n"
    "    return out + a + b"
)
NOVEL = (
    " Merge two sorted lists into one sorted list without using sort.\nInput: a = [1, 3], b = [2]\n"
    f"Solution:\n```python\n{MERGE}\n```\nTests:\n```python\nassert merge([1, 3], [2]) == [1, 2, 3]\n```\n"
)
NOVEL_CHAT = (
    "Sure! Here is a new task:\n\n**Instruction:** Return the number of distinct words in a text, ignoring "
    "case.\n**Input:** (none)\n**Solution:**\n```python\ndef distinct_words(text):\n"
    "    return len(set(text.lower().split()))\n```\n**Tests:**\n```python\n"
    "assert distinct_words('a A b') == 2\n```"
)
WRONG_TESTS = (
    "Compute the sum of the squares of a list of integers.\nInput:\nSolution:\n```python\n"
    "def sum_squares(xs):\n    return sum(x * x for x in xs)\n```\nTests:\n```python\n"
    "assert sum_squares([1, 2]) == 4\n```"
)
NEAR_DUPLICATE = (
    "Write a Python function that counts how many vowels appear in a text.\nInput:\nSolution:\n"
    "def vowels(t):\n    return sum(c in 'aeiou' for c in t)\nTests:\nassert vowels('ae') == 2\n"
)
BLACKLISTED = (
    "Draw a histogram of the values with matplotlib.\n"
    "Solution:\nimport matplotlib\nTests:\nassert matplotlib\n"
)
GARBAGE = "I am sorry, I cannot help with that."


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in SEED_TASKS_FIXTURE))
    return path


class FakeTeacher:
    """Answers each generate() call with the next list of canned replies (None: not produced)."""

    def __init__(self, rounds: list[list[str | None]]) -> None:
        self.rounds = list(rounds)
        self.prompts: list[list[str]] = []

    def generate(self, prompts: list[str]) -> list[str | None]:
        self.prompts.append(list(prompts))
        answers = self.rounds.pop(0)
        assert len(answers) == len(prompts)
        return answers

    def stats(self) -> dict:
        return {}


def si_config(seed_file: Path, **changes) -> SelfInstructConfig:
    base = {"num_rounds": 1, "prompts_per_round": 7, "examples_per_prompt": 2, "seed_tasks": str(seed_file)}
    return SelfInstructConfig(**(base | changes))


def test_self_instruct_parses_filters_verifies(seed_file: Path) -> None:
    replies = [NOVEL, NEAR_DUPLICATE, GARBAGE, WRONG_TESTS, BLACKLISTED, NOVEL_CHAT, None]
    teacher = FakeTeacher([replies])
    kept, counts, filtered = self_instruct(teacher, si_config(seed_file), VERIFY, seed=0)
    assert [k["instruction"] for k in kept] == [
        "Merge two sorted lists into one sorted list without using sort.",
        "Return the number of distinct words in a text, ignoring case.",
    ]
    assert counts["prompts"] == 7 and counts["generated"] == 6 and counts["not_produced"] == 1
    assert counts["unparseable"] == 1 and counts["kept"] == 2
    assert {k: v for k, v in filtered.counts.items() if v} == {
        "blacklisted": 1,
        "assertion": 1,
        "too_similar": 1,
    }
    reasons = {r["reason"]: r for r in filtered.rejected}
    assert reasons["too_similar"]["detail"]["similar_to"] == SEED_TASKS_FIXTURE[0]["instruction"]
    assert reasons["too_similar"]["detail"]["rougeL"] > 0.7
    assert reasons["assertion"]["detail"]["error"].startswith("AssertionError")
    assert reasons["unparseable"]["reply"] == GARBAGE

    task = kept[0]
    assert task["source"] == "self_instruct" and task["id"].startswith("self_instruct-")
    assert task["input"] == "a = [1, 3], b = [2]" and task["output"] == MERGE
    meta = task["metadata"]
    assert meta["mode"] == "self_instruct" and meta["round"] == 0
    assert meta["tests"] == "assert merge([1, 3], [2]) == [1, 2, 3]"
    assert meta["verified"] is True and meta["verification"] == "passed"
    assert len(meta["examples"]) == 2 and set(meta["examples"]) <= {"s1", "s2", "s3"}

    # the prompts: examples_per_prompt "### Task N" blocks from the pool, then the open next task
    for prompt in teacher.prompts[0]:
        assert re.findall(r"^### Task (\d+)$", prompt, re.MULTILINE) == ["1", "2", "3"]
        assert prompt.endswith("### Task 3\nInstruction:")
        shown = re.findall(r"^Instruction: (.+)$", prompt, re.MULTILINE)
        assert len(set(shown)) == 2 and set(shown) <= {t["instruction"] for t in SEED_TASKS_FIXTURE}
        assert prompt.count("Tests:\n```python\nassert ") == 2


def test_self_instruct_keep_all_marks_verified(seed_file: Path) -> None:
    teacher = FakeTeacher([[NOVEL, WRONG_TESTS]])
    cfg = VERIFY.model_copy(update={"keep": "all"})
    kept, counts, _ = self_instruct(teacher, si_config(seed_file, prompts_per_round=2), cfg, seed=0)
    assert [(k["metadata"]["verified"], k["metadata"]["verification"]) for k in kept] == [
        (True, "passed"),
        (False, "assertion"),
    ]
    assert counts["kept"] == 2


def test_self_instruct_pool_grows_across_rounds(seed_file: Path) -> None:
    # round 2 repeats round 1's new task: it is now in the pool, so it is too similar; and round 2's prompt
    # shows it among the examples (generated tasks join the in-context mix)
    teacher = FakeTeacher([[NOVEL], [NOVEL]])
    kept, counts, filtered = self_instruct(
        teacher, si_config(seed_file, num_rounds=2, prompts_per_round=1), VERIFY, seed=0
    )
    assert [k["metadata"]["round"] for k in kept] == [0]
    assert filtered.counts["too_similar"] == 1
    assert "Merge two sorted lists" in teacher.prompts[1][0]


def test_self_instruct_failed_verification_does_not_join_the_pool(seed_file: Path) -> None:
    broken = NOVEL.replace("== [1, 2, 3]", "== [3, 2, 1]")
    teacher = FakeTeacher([[broken, NOVEL]])
    kept, _, filtered = self_instruct(teacher, si_config(seed_file, prompts_per_round=2), VERIFY, seed=0)
    assert len(kept) == 1 and kept[0]["metadata"]["tests"].endswith("[1, 2, 3]")
    assert filtered.counts["assertion"] == 1 and filtered.counts["too_similar"] == 0


def test_self_instruct_is_seeded(seed_file: Path) -> None:
    cfg = si_config(seed_file, prompts_per_round=4)
    a, b, c = (FakeTeacher([[GARBAGE] * 4]) for _ in range(3))
    self_instruct(a, cfg, VERIFY, seed=0)
    self_instruct(b, cfg, VERIFY, seed=0)
    self_instruct(c, cfg, VERIFY, seed=1)
    assert a.prompts == b.prompts
    assert a.prompts != c.prompts


def test_self_instruct_default_seed_tasks() -> None:
    teacher = FakeTeacher([[GARBAGE]])
    cfg = SelfInstructConfig(num_rounds=1, prompts_per_round=1, examples_per_prompt=3)
    _, counts, _ = self_instruct(teacher, cfg, VERIFY, seed=0)
    assert (counts["generated"], counts["unparseable"], counts["kept"]) == (1, 1, 0)
    assert re.findall(r"^### Task (\d+)$", teacher.prompts[0][0], re.MULTILINE) == ["1", "2", "3", "4"]


def test_self_instruct_truncated_replies_keep_their_complete_tasks(tmp_path: Path, seed_file: Path) -> None:
    """max_new_tokens reached: in a list of tasks (the complete ones kept, the cut one counted) and in the
    middle of the only task's code (counted, never run in the sandbox as a syntax error)."""
    list_cut = NOVEL + LIST_CUT.split("\n\n", 1)[1]  # Merge ..., then Sort ..., then "Count the vowels of"
    cut_code = "Compute the running maximum of a list.\nSolution:\n```python\ndef running_max(xs):\n    out ="
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=si_config(seed_file, prompts_per_round=3),
        verify=VERIFY,
    )
    out = tmp_path / "out"
    out.mkdir()
    teacher = FakeTeacher([[list_cut, cut_code, GARBAGE]])
    report = synthesize_pairs(scrape_dir(tmp_path), out, cfg, teacher, seed=0)
    si = report["self_instruct"]
    assert (si["generated"], si["parsed"], si["truncated"], si["unparseable"], si["kept"]) == (3, 2, 2, 1, 2)
    assert si["verification"]["checked"] == 2 and si["verification"]["failures"]["syntax_error"] == 0
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [
        "Merge two sorted lists into one sorted list without using sort.",
        "Sort numbers in descending order.",
    ]
    assert rows[0]["metadata"]["examples"] == rows[1]["metadata"]["examples"]  # from one reply
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["truncated", "truncated", "unparseable"]
    cut = [r for r in rejected if r["reason"] == "truncated"]
    assert {r["reply"] for r in cut} == {list_cut, cut_code}
    assert [r["piece"] for r in cut if "piece" in r] == ["### Task 5\nInstruction: Count the vowels of"]


# --------------------------------------------------------------------------------------------------------
# OSS-Instruct with a scripted teacher
# --------------------------------------------------------------------------------------------------------


def test_snippet_window_and_provenance() -> None:
    import random

    record = {
        **RECORDS[0],
        "code": "def f(x):\n    a = x + 1\n    b = a * 2\n    return b\n",
        "line_start": 10,
    }
    for seed in range(20):
        got = snippet(record, random.Random(seed), 2, 3)
        assert got is not None
        first, last = got["lines"]
        assert 2 <= last - first + 1 <= 3 and 10 <= first and last <= 13
        original = record["code"].splitlines()[first - 10 : last - 10 + 1]
        assert got["code"] == textwrap.dedent("\n".join(original))  # the window, dedented
        assert not got["code"].startswith(" ")
        assert (got["record_id"], got["path"]) == ("rec-row-norms", "sklearn/utils/extmath.py")
    assert snippet({**record, "code": "# only\n# comments\n"}, random.Random(0), 1, 2) is None


OSS_REPLY = (
    "Compute the Euclidean norm of every row of a list of rows, optionally squared.\n\n[Solution]\n"
    "```python\ndef row_norms(rows, squared=False):\n    norms = [sum(v * v for v in row) for row in rows]\n"
    "    return norms if squared else [n ** 0.5 for n in norms]\n```\n\n[Tests]\n```python\n"
    "assert row_norms([[3, 4]]) == [5.0]\nassert row_norms([[1, 2]], squared=True) == [5]\n```"
)


def test_oss_instruct_seeds_prompts_with_scraped_code_and_keeps_provenance() -> None:
    teacher = FakeTeacher([[OSS_REPLY, GARBAGE, None]])
    cfg = OssInstructConfig(enabled=True, num_prompts=3, min_lines=1, max_lines=15)
    kept, counts, filtered = oss_instruct(teacher, RECORDS, cfg, VERIFY, seed=0)
    assert (counts["prompts"], counts["generated"], counts["not_produced"], counts["unparseable"]) == (
        3,
        2,
        1,
        1,
    )
    assert len(kept) == 1
    row = kept[0]
    assert row["source"] == "oss_instruct" and row["instruction"].startswith("Compute the Euclidean norm")
    meta = row["metadata"]
    assert meta["mode"] == "oss_instruct" and meta["verified"] is True
    record = next(r for r in RECORDS if r["id"] == meta["seed_record"])
    assert meta["path"] == record["path"] and meta["qualname"] == record["name"]
    first, last = meta["lines"]
    assert record["line_start"] <= first <= last < record["line_start"] + len(record["code"].splitlines())
    assert 1 <= last - first + 1 <= 15
    # every prompt shows its snippet in a code fence and asks for the three sections
    for prompt in teacher.prompts[0]:
        assert "[Problem Description]" in prompt and "[Solution]" in prompt and "[Tests]" in prompt
    assert f"```python\n{meta['seed_snippet']}\n```" in teacher.prompts[0][0]
    assert oss_instruct_prompt("x = 1").endswith("[Problem Description]\n")


def test_oss_instruct_counts_a_cut_reply_and_ignores_a_next_snippet() -> None:
    cut = OSS_REPLY[: OSS_REPLY.index("[Tests]") + len("[Tests]\n```python\nassert row_norms([[3")]
    # a completion model going on with a snippet of its own: not scraped code, so not a seed of ours
    more = OSS_REPLY + "\n\nCode snippet for inspiration:\n```python\nx = 1\n```\n[Problem Description]\nA"
    teacher = FakeTeacher([[cut, more]])
    cfg = OssInstructConfig(enabled=True, num_prompts=2, min_lines=1, max_lines=15)
    kept, counts, filtered = oss_instruct(teacher, RECORDS, cfg, VERIFY, seed=0)
    assert (counts["generated"], counts["parsed"], counts["truncated"], counts["unparseable"]) == (2, 1, 1, 0)
    assert len(kept) == 1 and kept[0]["instruction"].startswith("Compute the Euclidean norm")
    assert [r["reason"] for r in filtered.rejected] == ["truncated"]


def test_oss_instruct_without_code_is_an_error() -> None:
    cfg = OssInstructConfig(enabled=True, num_prompts=1)
    with pytest.raises(ValueError, match="scraped code"):
        oss_instruct(FakeTeacher([]), [{**RECORDS[0], "code": ""}], cfg, VERIFY, seed=0)


# --------------------------------------------------------------------------------------------------------
# The whole stage with an OpenAI-compatible teacher on a loopback server
# --------------------------------------------------------------------------------------------------------


class ChatServer:
    """Answers the n-th request with completions[(n - 1) % len], `usage` included; `errors` maps request
    numbers (1-based) to an HTTP status sent instead (Retry-After: 0, so retries do not wait), and past
    `fail_after` requests every answer is a 401 (a revoked key: the stage dies mid-way)."""

    USAGE = {"prompt_tokens": 11, "completion_tokens": 7}

    def __init__(self, completions: list[str]) -> None:
        self.completions = completions
        self.requests: list[tuple[str, dict]] = []
        self.errors: dict[int, int] = {}
        self.fail_after: int | None = None
        self.lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _json(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests.append((self.path, body))
                    n = len(state.requests)
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                if state.fail_after is not None and n > state.fail_after:
                    return self._json(401, {"error": {"message": "key revoked"}})
                if n in state.errors:
                    return self._json(state.errors[n], {"error": {"message": "scripted failure"}})
                text = state.completions[(n - 1) % len(state.completions)]
                message = {"role": "assistant", "content": text}
                self._json(200, {"choices": [{"message": message}], "usage": state.USAGE})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer([NOVEL, GARBAGE, NOVEL])
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join(timeout=5)


def scrape_dir(tmp_path: Path) -> Path:
    scrape = tmp_path / "scrape"
    scrape.mkdir()
    (scrape / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return scrape / "records.jsonl"


def test_synthesize_pairs_with_openai_teacher(
    tmp_path: Path, seed_file: Path, chat_server: ChatServer
) -> None:
    records = scrape_dir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    teacher_cfg = TeacherConfig(
        backend="openai",
        base_url=chat_server.url,
        model="served-model",
        temperature=0.2,
        max_new_tokens=64,
        max_retries=0,
        timeout_s=10,
    )
    cfg = SynthesizeConfig(
        max_docstring_pairs=2,
        self_instruct=SelfInstructConfig(
            num_rounds=1, prompts_per_round=3, examples_per_prompt=2, seed_tasks=str(seed_file)
        ),
        verify=VERIFY,
        teacher=teacher_cfg,
    )
    teacher = RemoteTeacher(teacher_cfg)
    try:
        report = synthesize_pairs(records, out, cfg, teacher, seed=0)
    finally:
        teacher.close()

    # server answers NOVEL, GARBAGE, NOVEL: kept, unparseable, then too similar to the one just kept
    si = report["self_instruct"]
    assert (report["rows_in"], report["rows_out"]) == (3, 3)
    assert report["by_source"] == {"docstring": 2, "self_instruct": 1}
    assert (si["prompts"], si["generated"], si["unparseable"], si["parsed"], si["kept"]) == (3, 3, 1, 2, 1)
    assert si["rejected"]["too_similar"] == 1 and si["keep_rate"] == round(1 / 3, 4)
    # both parsed tasks ran (the duplicate passes too: novelty comes after verification)
    assert si["verification"] == {
        "checked": 2,
        "passed": 2,
        "pass_rate": 1.0,
        "failures": {"no_tests": 0, "syntax_error": 0, "timeout": 0, "assertion": 0, "crash": 0},
    }
    assert report["oss_instruct"] == {"enabled": False}
    assert report["teacher"]["backend"] == "openai"
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["docstring", "docstring", "self_instruct"]
    assert rows[2]["instruction"] == "Merge two sorted lists into one sorted list without using sort."
    assert set(rows[2]) == {"id", "instruction", "input", "output", "source", "metadata"}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["too_similar", "unparseable"]

    assert len(chat_server.requests) == 3
    for path, body in chat_server.requests:
        assert path == "/v1/chat/completions"
        assert body["model"] == "served-model"
        (message,) = body["messages"]
        assert message["role"] == "user"
        assert message["content"].startswith("Here are some Python programming tasks")
        assert message["content"].endswith("### Task 3\nInstruction:")


def test_synthesize_pairs_oss_instruct_mode(tmp_path: Path) -> None:
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=SelfInstructConfig(enabled=False),
        oss_instruct=OssInstructConfig(enabled=True, num_prompts=2),
        verify=VERIFY.model_copy(update={"keep": "all"}),
    )
    report = synthesize_pairs(
        scrape_dir(tmp_path), tmp_path, cfg, FakeTeacher([[OSS_REPLY, GARBAGE]]), seed=0
    )
    assert report["by_source"] == {"oss_instruct": 1}
    assert report["oss_instruct"]["verification"]["passed"] == 1
    assert report["self_instruct"] == {"enabled": False}


def test_synthesize_pairs_without_teacher_modes(tmp_path: Path) -> None:
    cfg = SynthesizeConfig(self_instruct=SelfInstructConfig(enabled=False))
    report = synthesize_pairs(scrape_dir(tmp_path), tmp_path, cfg, None, seed=0)
    assert report == {
        "rows_in": 3,
        "rows_out": 3,
        "by_source": {"docstring": 3},
        "self_instruct": {"enabled": False},
        "oss_instruct": {"enabled": False},
        "verify": None,
        "teacher": None,
    }
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 3


def test_too_few_records_names_the_cause_and_counts(tmp_path: Path, seed_file: Path) -> None:
    cfg = SynthesizeConfig(
        docstring_pairs=False,
        self_instruct=si_config(seed_file, prompts_per_round=3),
        verify=VERIFY,
        min_records=2,
    )
    teacher = FakeTeacher([[GARBAGE, GARBAGE, WRONG_TESTS]])
    with pytest.raises(TooFewRecords) as caught:
        synthesize_pairs(scrape_dir(tmp_path), tmp_path, cfg, teacher, seed=0)
    message = str(caught.value)
    assert "synthesize kept 0 pairs, fewer than synthesize.min_records (2)" in message
    assert "most were lost to unparseable" in message
    assert "docstring pairs are off" in message and "oss_instruct is off" in message
    assert (
        "self_instruct kept 0 of 3 replies to 3 prompts (not produced 0, unparseable 2, assertion 1)"
        in message
    )


# --------------------------------------------------------------------------------------------------------
# The stage as the flow runs it: the teacher cache, the teacher's accounting in the report, closed after use
# --------------------------------------------------------------------------------------------------------


def stage_config(tiny_profile, server: ChatServer, **teacher: object) -> PipelineConfig:
    """tiny.yaml with Self-Instruct asking the loopback server 4 prompts, one request at a time."""

    def edit(raw: dict) -> None:
        raw["synthesize"] = {
            "max_docstring_pairs": 2,
            # the shipped seed tasks: four prompts that all differ
            "self_instruct": {"num_rounds": 1, "prompts_per_round": 4, "examples_per_prompt": 2},
            "verify": {"timeout_s": 20, "workers": 2},
            "teacher": {
                "backend": "openai",
                "base_url": server.url,
                "model": "served-model",
                "temperature": 0.2,
                "max_new_tokens": 64,
                "max_retries": 0,
                "timeout_s": 10,
                "max_concurrency": 1,
                **teacher,
            },
        }

    return load_config(tiny_profile(edit))


def scrape_output(tmp_path: Path) -> StageOutput:
    """A finished scrape stage holding RECORDS, as the flow hands it to synthesize."""
    records = scrape_dir(tmp_path)
    return StageOutput(
        "scrape", "scrape-key", str(records.parent), 3, 3, "executed", 0.0, {"records": records.name}
    )


@pytest.fixture
def made_teachers(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every teacher the synthesize stage makes, with `closed` set once the stage has closed it."""
    made = []

    def spy(*args, **kwargs):
        teacher = make_teacher(*args, **kwargs)
        close, teacher.closed = teacher.close, False

        def closing() -> None:
            teacher.closed = True
            close()

        teacher.close = closing
        made.append(teacher)
        return teacher

    monkeypatch.setattr(synthesize, "make_teacher", spy)
    return made


def prompts_sent(server: ChatServer) -> list[str]:
    return [body["messages"][0]["content"] for _, body in server.requests]


def test_stage_rerun_asks_the_teacher_nothing(
    tmp_path: Path, chat_server: ChatServer, tiny_profile, made_teachers: list
) -> None:
    cfg = stage_config(tiny_profile, chat_server)
    scrape = scrape_output(tmp_path)
    first = synthesize.SPEC.build(cfg, {"scrape": scrape})
    assert first.status == "executed" and len(chat_server.requests) == 4
    assert CallCache(workspace_path(cfg) / "teacher_cache").count() == 4
    assert read_report(first)["teacher"]["requests"] == 4

    # forced (the nightly run over unchanged sources), then an upstream change that re-keys the stage
    forced = synthesize.SPEC.build(cfg, {"scrape": scrape}, force=True)
    rekeyed = synthesize.SPEC.build(cfg, {"scrape": replace(scrape, key="another-scrape")})
    assert forced.status == rekeyed.status == "executed" and rekeyed.key != first.key
    assert len(chat_server.requests) == 4  # not one new request
    pairs = (Path(first.path) / "pairs.jsonl").read_text()
    for out in (forced, rekeyed):
        teacher = read_report(out)["teacher"]
        counts = {k: teacher[k] for k in ("prompts", "cache_hits", "requests", "produced")}
        assert counts == {"prompts": 4, "cache_hits": 4, "requests": 0, "produced": 0}
        assert (Path(out.path) / "pairs.jsonl").read_text() == pairs  # the same data, for free
    assert len(made_teachers) == 3 and all(t.closed for t in made_teachers)


def test_stage_without_the_teacher_cache_asks_again(
    tmp_path: Path, chat_server: ChatServer, tiny_profile
) -> None:
    cfg = stage_config(tiny_profile, chat_server, cache=False)
    scrape = scrape_output(tmp_path)
    synthesize.SPEC.build(cfg, {"scrape": scrape})
    synthesize.SPEC.build(cfg, {"scrape": scrape}, force=True)
    assert len(chat_server.requests) == 8 and not (workspace_path(cfg) / "teacher_cache").exists()


def test_stage_report_holds_the_teacher_accounting(
    tmp_path: Path, chat_server: ChatServer, tiny_profile, made_teachers: list
) -> None:
    # prompt 1: a 503, retried; prompt 2: a 500 twice, given up; prompts 3 and 4: answered
    chat_server.errors = {1: 503, 3: 500, 4: 500}
    cfg = stage_config(tiny_profile, chat_server, max_retries=1)
    out = synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    report = read_report(out)
    usage = ChatServer.USAGE
    assert report["teacher"] | {"seconds": None} == {
        "backend": "openai",
        "model": "served-model",  # never the URL: it may hold a password
        "prompts": 4,
        "cache_hits": 0,
        "produced": 3,
        "failed": 1,
        "failures": {"http_500": 1},
        "skipped": 0,
        "requests": 6,
        "retries": 2,
        "prompt_tokens": 3 * usage["prompt_tokens"],
        "completion_tokens": 3 * usage["completion_tokens"],
        "seconds": None,
        "stopped": None,
        "caps": {},
    }
    assert report["teacher"]["seconds"] >= 0
    assert report["self_instruct"]["not_produced"] == 1 and report["self_instruct"]["generated"] == 3
    assert made_teachers[0].closed
    # the same figures for people: report.md, the stage's Prefect artifact
    text = (Path(out.path) / "report.md").read_text()
    si = report["self_instruct"]
    assert f"| self_instruct | 4 | 3 | {si['unparseable']} | {si['truncated']} | {si['parsed']} |" in text
    assert "prompts 4, cache_hits 0, requests 6, retries 2, failed 1, skipped 0" in text
    assert "| oss_instruct | off |" in text


def test_stage_report_names_the_sandbox_that_ran_the_teachers_code(
    tmp_path: Path, chat_server: ChatServer, tiny_profile
) -> None:
    # userns forced: what an ordinary user's machine (or a container's root) runs; auto here picks root
    cfg = stage_config(tiny_profile, chat_server).model_copy(
        update={"sandbox": SandboxConfig(backend="userns")}
    )
    out = synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    report = read_report(out)
    assert report["sandbox"]["backend"] == "userns" and report["self_instruct"]["verification"]["checked"] > 0
    assert (
        "Sandbox `userns`: userns: an unprivileged user namespace"
        in (Path(out.path) / "report.md").read_text()
    )


def test_stage_without_a_sandbox_fails_before_asking_the_teacher(
    tmp_path: Path, chat_server: ChatServer, tiny_profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.common import sandbox

    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} in this test")
    cfg = stage_config(tiny_profile, chat_server)
    with pytest.raises(sandbox.SandboxUnavailable, match="sandbox.backend: none"):
        synthesize.SPEC.build(cfg, {"scrape": scrape_output(tmp_path)})
    assert chat_server.requests == []


def test_stage_stopped_by_a_budget_cap_then_rerun_pays_only_the_rest(
    tmp_path: Path, chat_server: ChatServer, tiny_profile
) -> None:
    scrape = scrape_output(tmp_path)
    capped = stage_config(tiny_profile, chat_server, max_requests=2)
    report = read_report(synthesize.SPEC.build(capped, {"scrape": scrape}))
    teacher = report["teacher"]
    counts = {k: teacher[k] for k in ("stopped", "requests", "produced", "skipped")}
    assert counts == {"stopped": "max_requests", "requests": 2, "produced": 2, "skipped": 2}
    assert teacher["caps"] == {"max_requests": 2} and report["self_instruct"]["not_produced"] == 2
    paid = prompts_sent(chat_server)

    lifted = stage_config(tiny_profile, chat_server)  # the cap lifted: a new key
    report = read_report(synthesize.SPEC.build(lifted, {"scrape": scrape}))
    assert len(chat_server.requests) == 4 and not set(prompts_sent(chat_server)[2:]) & set(paid)
    teacher = report["teacher"]
    assert (teacher["cache_hits"], teacher["requests"], teacher["stopped"]) == (2, 2, None)
    assert report["self_instruct"]["generated"] == 4


def test_stage_killed_midway_then_rerun_pays_only_the_rest(
    tmp_path: Path, chat_server: ChatServer, tiny_profile, made_teachers: list
) -> None:
    chat_server.fail_after = 2  # the key is revoked after two answers: the third request fails the stage
    cfg = stage_config(tiny_profile, chat_server)
    scrape = scrape_output(tmp_path)
    with pytest.raises(TeacherError, match="401"):
        synthesize.SPEC.build(cfg, {"scrape": scrape})
    assert made_teachers[0].closed  # on failure too
    key = synthesize.SPEC.key(cfg, {"scrape": scrape.key})
    assert cached_output(workspace_path(cfg), "synthesize", key) is None  # nothing published
    killed = prompts_sent(chat_server)
    assert len(killed) == 3

    chat_server.fail_after = None
    out = synthesize.SPEC.build(cfg, {"scrape": scrape})
    resumed = prompts_sent(chat_server)[3:]
    assert len(resumed) == 2 and resumed[0] == killed[2]  # the refused one and the one never asked
    assert not set(resumed) & set(killed[:2])  # the two answered before the kill are not bought again
    assert read_report(out)["teacher"]["cache_hits"] == 2


@pytest.mark.slow
def test_local_smollm2_teacher_self_instruct(tmp_path: Path, smollm2_stage) -> None:
    """The default local teacher for real: SmolLM2-135M-Instruct (the offline profile's base model, built
    once per session from its GGUF file), asked through its chat template for 3 tasks."""
    import yaml

    raw = yaml.safe_load((REPO / "pipeline_config" / "offline.yaml").read_text())
    raw["workspace"] = str(tmp_path / "ws")
    raw["synthesize"] = {
        "max_docstring_pairs": 2,
        "self_instruct": {"num_rounds": 1, "prompts_per_round": 3, "examples_per_prompt": 2},
        "verify": {"timeout_s": 20, "workers": 2},
        "teacher": {"backend": "local", "model": "base", "max_new_tokens": 128},
    }
    (tmp_path / "offline.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "offline.yaml")
    inputs = {"scrape": scrape_output(tmp_path), "base_model": smollm2_stage[1]}
    out = synthesize.SPEC.build(cfg, inputs)
    report = read_report(out)

    si, teacher = report["self_instruct"], report["teacher"]
    assert (si["prompts"], si["not_produced"], si["generated"]) == (3, 0, 3)
    # every reply is accounted for: tasks parsed from it, or pieces counted with a reason
    assert si["parsed"] + si["unparseable"] + si["truncated"] >= 3
    assert si["parsed"] == sum(si["rejected"].values()) + si["kept"]
    assert report["by_source"].get("self_instruct", 0) == si["kept"]
    rejected = [json.loads(line) for line in (Path(out.path) / "rejected.jsonl").read_text().splitlines()]
    reasons = [r["reason"] for r in rejected]
    assert reasons.count("unparseable") == si["unparseable"] and reasons.count("truncated") == si["truncated"]
    assert len(rejected) == si["unparseable"] + si["truncated"] + sum(si["rejected"].values())
    # the teacher's accounting adds up: 3 completions generated, nothing cached, nothing capped
    assert (teacher["backend"], teacher["model"], teacher["prompts"], teacher["produced"]) == (
        "local",
        "base",
        3,
        3,
    )
    assert (teacher["requests"], teacher["cache_hits"], teacher["failed"], teacher["skipped"]) == (3, 0, 0, 0)
    assert teacher["stopped"] is None and teacher["prompt_tokens"] > 3 * 100
    assert 0 < teacher["completion_tokens"] <= 3 * 128
    replies = [json.loads(p.read_text()) for p in (tmp_path / "ws" / "teacher_cache").rglob("*.json")]
    assert len(replies) == 3 and all(r["text"].strip() for r in replies)  # the model wrote something
    assert sum(r["completion_tokens"] for r in replies) == teacher["completion_tokens"]

    again = synthesize.SPEC.build(cfg, inputs, force=True)  # the nightly re-run: no generation at all
    teacher = read_report(again)["teacher"]
    assert (teacher["cache_hits"], teacher["requests"], teacher["completion_tokens"]) == (3, 0, 0)
    assert (Path(again.path) / "pairs.jsonl").read_text() == (Path(out.path) / "pairs.jsonl").read_text()
