"""Small datasets shaped like the seed recipes' real ones, written by the tests that run those profiles:
Python coding tasks in Alpaca form (python_code_instructions_18k_alpaca: instruction / input / output),
the same tasks as Self-Instruct teacher replies (Code Alpaca), and a question/answer set (lamini_docs).

The tasks are composed (an operation on a kind of data) so that they differ the way real instruction data
does: each has its own wording, function and code, so clean keeps them, and each carries a test that its
code passes (checked here, when the module is imported), so synthesis verification keeps them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

# name, what the list holds, how one raw value becomes the value used, a sample list
SUBJECTS = [
    ("prices", "the prices, in cents, of the items in a shopping cart", "x / 100", [250, 100, 475]),
    ("points", "the points a player scored in each round of a board game", "max(x, 0)", [3, -1, 7]),
    ("ages", "the birth years of the members of a chess club, as of 2024", "2024 - x", [1990, 2001, 1985]),
    ("temps", "daily temperatures in Celsius recorded by a weather station", "x * 9 / 5 + 32", [10, 25, 0]),
    ("words", "the words of a sentence that the user typed", "len(x)", ["tree", "a", "river"]),
    (
        "lines",
        "lines read from a log file; each counts by its length without surrounding spaces",
        "len(x.strip())",
        ["ok  ", " warn", "err "],
    ),
]
# name, instruction wording ({desc}: the subject), body over `values`
OPERATIONS = [
    ("total", "Add up {desc} and return the total.", "return sum(values)"),
    ("largest", "Find the largest value among {desc}.", "return max(values)"),
    ("smallest", "Which of {desc} is the smallest? Write code that returns it.", "return min(values)"),
    ("ordered", "Produce a new list of {desc}, sorted in ascending order.", "return sorted(values)"),
    (
        "backwards",
        "Given {desc}, return them in reverse order without changing the input.",
        "return values[::-1]",
    ),
    ("distinct", "How many different values appear in {desc}? Return that count.", "return len(set(values))"),
    ("spread", "Compute the range (maximum minus minimum) of {desc}.", "return max(values) - min(values)"),
    (
        "first_last",
        "Return a pair holding the first and the last of {desc}.",
        "return (values[0], values[-1])",
    ),
]


class Task(NamedTuple):
    instruction: str
    input: str
    code: str
    test: str


def _task(op: tuple, subject: tuple) -> Task:
    op_name, wording, body = op
    param, desc, transform, sample = subject
    name = f"{op_name}_{param}"
    code = f"def {name}({param}):\n    values = [{transform} for x in {param}]\n    {body}\n"
    space: dict = {}
    exec(code, space)  # our own code: the expected value of its test
    test = f"assert {name}({sample!r}) == {space[name](sample)!r}"
    return Task(wording.format(desc=desc), f"{param} = {sample!r}", code, test)


TASKS = [_task(op, subject) for subject in SUBJECTS for op in OPERATIONS]  # 48


def alpaca_records(n: int = len(TASKS)) -> list[dict]:
    """python_code_instructions_18k_alpaca's columns: instruction, input, output and the Alpaca `prompt`."""
    return [
        {
            "instruction": t.instruction,
            "input": t.input if i % 3 else "",  # some rows without an input, as in the real set
            "output": t.code,
            "prompt": f"Below is an instruction that describes a task. ### Instruction: {t.instruction}",
        }
        for i, t in enumerate(TASKS[:n])
    ]


def qa_records(n: int = len(TASKS)) -> list[dict]:
    """lamini_docs' columns: question, answer (prose about code)."""
    return [
        {
            "question": t.instruction,
            "answer": f"{t.code}\nFor instance, `{t.test.removeprefix('assert ')}` holds.",
        }
        for t in TASKS[:n]
    ]


def self_instruct_reply(start: int, count: int) -> str:
    """A completion model's continuation of the Self-Instruct prompt's task list: `count` tasks from
    TASKS[start:], each with its input, solution and tests."""
    parts = []
    for offset in range(count):
        t = TASKS[(start + offset) % len(TASKS)]
        head = " " if offset == 0 else f"\n### Task {offset + 4}\nInstruction: "
        parts.append(
            f"{head}{t.instruction}\nInput: {t.input}\nSolution:\n```python\n{t.code}```\n"
            f"Tests:\n```python\n{t.test}\n```\n"
        )
    return "".join(parts)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
