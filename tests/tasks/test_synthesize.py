"""Tests for tasks.synthesize: docstring pairs, the Self-Instruct parser and loop (with a fake teacher), and
the whole stage with an OpenAI-compatible teacher served from a loopback HTTP server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline_config.schema import SelfInstructConfig, SynthesizeConfig, TeacherConfig
from tasks.common.teacher.openai import OpenAITeacher
from tasks.synthesize.docstring_pairs import SUMMARY_MAX_CHARS, docstring_pairs, docstring_summary, pair
from tasks.synthesize.pairs import synthesize_pairs
from tasks.synthesize.self_instruct import parse_task, self_instruct

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
        "name": "sklearn.utils.extmath.row_norms",
        "kind": "function",
        "signature": "def row_norms(X, squared=False):",
        "docstring": "Row-wise (squared) Euclidean norm of X.\n\n    Parameters\n    ----------\n"
        "    X : array\n",
        "code_without_docstring": "def row_norms(X, squared=False):\n    norms = (X * X).sum(axis=1)\n"
        "    return norms if squared else norms ** 0.5\n",
        "path": "sklearn/utils/extmath.py",
        "line_start": 50,
        "line_end": 75,
        "package_version": "1.9.1",
    },
    {
        "name": "sklearn.preprocessing.StandardScaler",
        "kind": "class",
        "signature": "class StandardScaler(TransformerMixin, BaseEstimator):",
        "docstring": "Standardize features by removing the mean\nand scaling to unit variance.",
        "code_without_docstring": "class StandardScaler(TransformerMixin, BaseEstimator):\n    pass\n",
        "path": "sklearn/preprocessing/_data.py",
        "line_start": 700,
        "line_end": 1100,
        "package_version": "1.9.1",
    },
    {
        "name": "sklearn.preprocessing.StandardScaler.fit",
        "kind": "method",
        "signature": "def fit(self, X, y=None):",
        "docstring": "Compute the mean and std to be used for later scaling.",
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
# parse_task
# --------------------------------------------------------------------------------------------------------


def test_parse_task_continuation_of_the_prompt() -> None:
    # the prompt ends with "Instruction:", so a completion usually starts with the instruction text itself
    got = parse_task(" Reverse a list.\nInput: xs = [1, 2]\nOutput:\ndef rev(xs):\n    return xs[::-1]\n")
    assert got == {
        "instruction": "Reverse a list.",
        "input": "xs = [1, 2]",
        "output": "def rev(xs):\n    return xs[::-1]",
    }


def test_parse_task_with_labels_and_empty_input() -> None:
    got = parse_task("Instruction: Add two numbers.\nInput:\nOutput:\ndef add(a, b):\n    return a + b")
    assert got == {
        "instruction": "Add two numbers.",
        "input": "",
        "output": "def add(a, b):\n    return a + b",
    }


def test_parse_task_fenced_code() -> None:
    got = parse_task("Square a number.\nInput:\nOutput:\n```python\ndef sq(x):\n    return x * x\n```\nDone.")
    assert got == {"instruction": "Square a number.", "input": "", "output": "def sq(x):\n    return x * x"}
    plain_fence = parse_task("Square.\nInput:\nOutput:\n```\nx * x\n```")
    assert plain_fence is not None and plain_fence["output"] == "x * x"


@pytest.mark.parametrize(
    "completion",
    [
        "Reverse a list.\nInput: xs",  # no Output
        "Reverse a list.\nInput: xs\nOutput:   \n",  # empty Output
        "Instruction:   \nInput: xs\nOutput: x",  # empty instruction
        "lorem ipsum dolor sit amet",
        "",
    ],
)
def test_parse_task_rejects_incomplete(completion: str) -> None:
    assert parse_task(completion) is None


def test_parse_task_stops_at_the_next_task() -> None:
    got = parse_task(
        "Count words.\nInput: s\nOutput:\nlen(s.split())\n###\nTask 5\nInstruction: Other.\n"
        "Input:\nOutput:\nother()"
    )
    assert got == {"instruction": "Count words.", "input": "s", "output": "len(s.split())"}


# --------------------------------------------------------------------------------------------------------
# Self-Instruct with a fake teacher
# --------------------------------------------------------------------------------------------------------

SEED_TASKS = [
    {
        "id": "s1",
        "instruction": "Write a Python function that counts how many vowels appear in a string.",
        "input": "",
        "output": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())",
    },
    {
        "id": "s2",
        "instruction": "Write a function that reverses the order of the words in a sentence.",
        "input": "sentence = 'a b'",
        "output": "def reverse_words(s):\n    return ' '.join(s.split()[::-1])",
    },
    {
        "id": "s3",
        "instruction": "Create a function that returns the largest element of a list of numbers.",
        "input": "",
        "output": "def largest(xs):\n    return max(xs)",
    },
]
NOVEL = (
    "Merge two sorted lists into one sorted list without using sort.\nInput: a = [1, 3], b = [2]\n"
    "Output:\ndef merge(a, b):\n    out = []\n    while a and b:\n        out.append((a if a[0] < b[0] "
    "else b).pop(0))\n    return out + a + b\n"
)
NEAR_DUPLICATE = (
    "Write a Python function that counts how many vowels appear in a text.\nInput:\nOutput:\n"
    "def vowels(t):\n    return sum(c in 'aeiou' for c in t)\n"
)
GARBAGE = "I am sorry, I cannot help with that."


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in SEED_TASKS))
    return path


class FakeTeacher:
    """Answers each generate() call with the next list of canned completions; records the prompts."""

    def __init__(self, rounds: list[list[str]]) -> None:
        self.rounds = list(rounds)
        self.prompts: list[list[str]] = []

    def generate(self, prompts: list[str]) -> list[str]:
        self.prompts.append(list(prompts))
        answers = self.rounds.pop(0)
        assert len(answers) == len(prompts)
        return answers


def test_self_instruct_keeps_novel_rejects_similar_and_garbage(seed_file: Path) -> None:
    teacher = FakeTeacher([[NOVEL, NEAR_DUPLICATE, GARBAGE]])
    cfg = SelfInstructConfig(
        num_rounds=1,
        prompts_per_round=3,
        examples_per_prompt=2,
        seed_tasks=str(seed_file),
        max_similarity=0.7,
    )
    kept, counts = self_instruct(teacher, cfg, seed=0)
    assert dict(counts) == {"generated": 3, "unparseable": 1, "too_similar": 1, "kept": 1}
    assert len(kept) == 1
    task = kept[0]
    assert task["source"] == "self_instruct" and task["id"].startswith("self_instruct-")
    assert task["instruction"] == "Merge two sorted lists into one sorted list without using sort."
    assert task["input"] == "a = [1, 3], b = [2]"
    assert task["output"].startswith("def merge(a, b):\n") and task["output"].endswith("return out + a + b")
    assert task["metadata"]["round"] == 0
    assert 0 <= task["metadata"]["max_similarity"] < 0.7

    # the prompts: examples_per_prompt "Task N" blocks drawn from the seed pool, then the open Task 3
    assert len(teacher.prompts) == 1 and len(teacher.prompts[0]) == 3
    seed_instructions = {t["instruction"] for t in SEED_TASKS}
    for prompt in teacher.prompts[0]:
        assert re.findall(r"^Task (\d+)$", prompt, re.MULTILINE) == ["1", "2", "3"]
        assert prompt.endswith("###\nTask 3\nInstruction:")
        shown = re.findall(r"^Instruction: (.+)$", prompt, re.MULTILINE)
        assert len(shown) == 2 and len(set(shown)) == 2 and set(shown) <= seed_instructions
        assert prompt.startswith("Below are programming tasks")


def test_self_instruct_pool_grows_across_rounds(seed_file: Path) -> None:
    # round 2 repeats round 1's new task: it is now in the pool, so it is too similar
    teacher = FakeTeacher([[NOVEL], [NOVEL]])
    cfg = SelfInstructConfig(
        num_rounds=2, prompts_per_round=1, examples_per_prompt=2, seed_tasks=str(seed_file)
    )
    kept, counts = self_instruct(teacher, cfg, seed=0)
    assert dict(counts) == {"generated": 2, "unparseable": 0, "kept": 1, "too_similar": 1}
    assert [k["metadata"]["round"] for k in kept] == [0]
    assert len(teacher.prompts) == 2


def test_self_instruct_is_seeded(seed_file: Path) -> None:
    cfg = SelfInstructConfig(
        num_rounds=1, prompts_per_round=4, examples_per_prompt=2, seed_tasks=str(seed_file)
    )
    a, b, c = (FakeTeacher([[GARBAGE] * 4]) for _ in range(3))
    self_instruct(a, cfg, seed=0)
    self_instruct(b, cfg, seed=0)
    self_instruct(c, cfg, seed=1)
    assert a.prompts == b.prompts
    assert a.prompts != c.prompts


def test_self_instruct_default_seed_tasks() -> None:
    teacher = FakeTeacher([[GARBAGE]])
    cfg = SelfInstructConfig(num_rounds=1, prompts_per_round=1, examples_per_prompt=3)
    _, counts = self_instruct(teacher, cfg, seed=0)
    assert dict(counts) == {"generated": 1, "unparseable": 1, "kept": 0, "too_similar": 0}
    assert re.findall(r"^Task (\d+)$", teacher.prompts[0][0], re.MULTILINE) == ["1", "2", "3", "4"]


# --------------------------------------------------------------------------------------------------------
# The whole stage with an OpenAI-compatible teacher on a loopback server
# --------------------------------------------------------------------------------------------------------


class ChatServer:
    def __init__(self, completions: list[str]) -> None:
        self.completions = completions
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests.append((self.path, body))
                    n = len(state.requests)
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                text = state.completions[(n - 1) % len(state.completions)]
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": text}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

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


def test_synthesize_pairs_with_openai_teacher(
    tmp_path: Path, seed_file: Path, chat_server: ChatServer
) -> None:
    scrape = tmp_path / "scrape"
    scrape.mkdir()
    (scrape / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
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
        teacher=teacher_cfg,
    )
    teacher = OpenAITeacher(teacher_cfg)
    try:
        report = synthesize_pairs(scrape / "records.jsonl", out, cfg, teacher, seed=0)
    finally:
        teacher.close()

    # server answers NOVEL, GARBAGE, NOVEL: kept, unparseable, then too similar to the one just kept
    assert report == {
        "rows_in": 3,
        "rows_out": 3,
        "by_source": {"docstring": 2, "self_instruct": 1},
        "self_instruct": {"generated": 3, "unparseable": 1, "too_similar": 1, "kept": 1},
        "teacher": "openai",
    }
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == ["docstring", "docstring", "self_instruct"]
    assert rows[2]["instruction"] == "Merge two sorted lists into one sorted list without using sort."
    assert set(rows[2]) == {"id", "instruction", "input", "output", "source", "metadata"}

    assert len(chat_server.requests) == 3
    for path, body in chat_server.requests:
        assert path == "/v1/chat/completions"
        assert body["model"] == "served-model"
        assert (body["temperature"], body["max_tokens"]) == (0.2, 64)
        (message,) = body["messages"]
        assert message["role"] == "user"
        assert message["content"].startswith("Below are programming tasks")
        assert message["content"].endswith("###\nTask 3\nInstruction:")


def test_synthesize_pairs_without_self_instruct(tmp_path: Path) -> None:
    scrape = tmp_path / "scrape"
    scrape.mkdir()
    (scrape / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    cfg = SynthesizeConfig(self_instruct=SelfInstructConfig(enabled=False))
    report = synthesize_pairs(scrape / "records.jsonl", tmp_path, cfg, None, seed=0)
    assert report == {
        "rows_in": 3,
        "rows_out": 3,
        "by_source": {"docstring": 3},
        "self_instruct": {"generated": 0, "unparseable": 0, "too_similar": 0, "kept": 0},
        "teacher": None,
    }
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 3
