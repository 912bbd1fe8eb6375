"""tasks.synthesize.parsing: a task read out of a teacher's reply however it is dressed (completion or chat,
labels, headings, brackets, fences or none), stopping at the next task, and a cut reply's complete tasks
kept while the cut one is counted."""

from __future__ import annotations

import pytest
from synthesize_fakes import GARBAGE, LIST_CUT, SOLUTION, SORT, SORT_TESTS, TESTS, WANT

from tasks.synthesize.parsing import Task, parse_task, parse_tasks


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
