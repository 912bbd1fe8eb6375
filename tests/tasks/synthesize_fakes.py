"""What the synthesize tests share: scraped records, teacher replies in their many costumes (and the seed
tasks they imitate), a scripted teacher, a fake chat server's callback, and the scrape stage's output those
records stand for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pipeline_config.schema import SelfInstructConfig, VerifyConfig
from tasks.common.stage import StageOutput
from tasks.synthesize.parsing import Task
from tests.fake_chat import Call, Reply, chat_reply, error_reply

# The sandbox isolates when it can (root, namespaces); elsewhere these tests run it on rlimits alone.
VERIFY = VerifyConfig(timeout_s=20, workers=2)

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


SOLUTION = "def rev(xs):\n    return xs[::-1]"
TESTS = "assert rev([1, 2]) == [2, 1]"
WANT = Task("Reverse a list.", "xs = [1, 2]", SOLUTION, TESTS)

# a completion model continuing its list of tasks until max_new_tokens: two complete tasks, a third cut
SORT = "def sort_desc(xs):\n    return sorted(xs, reverse=True)"
SORT_TESTS = "assert sort_desc([1, 3, 2]) == [3, 2, 1]"
LIST_CUT = (
    f" Reverse a list.\nInput: xs = [1, 2]\nSolution:\n```python\n{SOLUTION}\n```\nTests:\n```python\n"
    f"{TESTS}\n```\n\n### Task 4\nInstruction: Sort numbers in descending order.\nSolution:\n```python\n"
    f"{SORT}\n```\nTests:\n```python\n{SORT_TESTS}\n```\n\n### Task 5\nInstruction: Count the vowels of"
)


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


def write_seed_tasks(folder: Path) -> Path:
    """SEED_TASKS_FIXTURE as a seed-task file in `folder`."""
    path = folder / "seeds.jsonl"
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


OSS_REPLY = (
    "Compute the Euclidean norm of every row of a list of rows, optionally squared.\n\n[Solution]\n"
    "```python\ndef row_norms(rows, squared=False):\n    norms = [sum(v * v for v in row) for row in rows]\n"
    "    return norms if squared else [n ** 0.5 for n in norms]\n```\n\n[Tests]\n```python\n"
    "assert row_norms([[3, 4]]) == [5.0]\nassert row_norms([[1, 2]], squared=True) == [5]\n```"
)


def scrape_dir(tmp_path: Path) -> Path:
    scrape = tmp_path / "scrape"
    scrape.mkdir()
    (scrape / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return scrape / "records.jsonl"


def scrape_output(tmp_path: Path) -> StageOutput:
    """A finished scrape stage holding RECORDS, as the flow hands it to synthesize."""
    records = scrape_dir(tmp_path)
    return StageOutput(
        stage="scrape",
        key="scrape-key",
        path=str(records.parent),
        rows_in=3,
        rows_out=3,
        status="executed",
        seconds=0.0,
        outputs={"records": records.name},
    )


USAGE = {"prompt_tokens": 11, "completion_tokens": 7}


def cycling(*completions: str, errors: dict[int, int] | None = None) -> Callable[[Call], Reply]:
    """A fake chat server's callback (tests/fake_chat.py) answering request n with completions[n % len],
    USAGE included; `errors` maps request indexes to an HTTP status sent instead (with Retry-After: 0, so a
    retry does not wait)."""

    def respond(call: Call) -> Reply:
        if errors and call.index in errors:
            return error_reply(errors[call.index], "scripted failure", {"Retry-After": "0"})
        return chat_reply(completions[call.index % len(completions)], USAGE)

    return respond
