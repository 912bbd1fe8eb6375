"""Builders for the task tests (plain functions; the fixtures that use them are in conftest.py): a tiny
scratch model built as tasks/base_model/scratch.py builds it, tiny pairs and tokenized datasets. Built
once per session and cached here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_config.schema import ScratchSource, SplitConfig, TokenizeConfig

PYTHON_CORPUS = '''
def add(a, b):
    """Return the sum of a and b."""
    return a + b


def mean(values):
    if not values:
        raise ValueError("empty input")
    return sum(values) / len(values)


class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def fizzbuzz(n):
    for i in range(1, n + 1):
        if i % 15 == 0:
            print("FizzBuzz")
        elif i % 3 == 0:
            print("Fizz")
        elif i % 5 == 0:
            print("Buzz")
        else:
            print(i)


import os
import json


def load(path):
    with open(path) as fh:
        return json.load(fh)


def flatten(items):
    out = []
    for item in items:
        if isinstance(item, list):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out


def square(x):
    return x * x


def is_even(n):
    return n % 2 == 0
'''

# ### Instruction / Response text of the prompt templates is in the corpus too, so that the tokenizer
# learns its words and prompts stay short.
TEMPLATE_TEXT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\nWrite a Python "
    "function.\n\n### Input:\nx\n\n### Response:\n"
)

TINY_SCRATCH = ScratchSource(
    kind="scratch",
    architecture="llama",
    vocab_size=400,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
)

_CACHE: dict[str, Path] = {}


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Tokenizer + model exactly as tasks.base_model.build_scratch_model builds them, saved to out_dir."""
    from tasks.base_model.scratch import build_model, train_tokenizer

    tokenizer = train_tokenizer([PYTHON_CORPUS, TEMPLATE_TEXT] * 4, TINY_SCRATCH.vocab_size)
    model = build_model(TINY_SCRATCH, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def ids(tokenizer, text: str) -> list[int]:
    """The token ids of text, without special tokens: what the tokenize tests compare rows with."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


FUNCTIONS = [
    ("square", "x", "def square(x):\n    return x * x\n"),
    ("add", "a, b", "def add(a, b):\n    return a + b\n"),
    ("is_even", "n", "def is_even(n):\n    return n % 2 == 0\n"),
    ("mean", "values", "def mean(values):\n    return sum(values) / len(values)\n"),
]


def make_pairs(n: int) -> list[dict]:
    """n small, repetitive instruction pairs (cycling over four functions), each with a unique id."""
    rows = []
    for i in range(n):
        name, args, code = FUNCTIONS[i % len(FUNCTIONS)]
        rows.append(
            {
                "id": f"pair-{i:03d}",
                "instruction": f"Write a Python function `{name}`.",
                "input": args if i % 2 else "",
                "output": f"{code}# example {i}\n",  # unique: equal code across the split is a leak
                "source": "test",
                "metadata": {},
            }
        )
    return rows


def write_pairs(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pairs.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return folder


def tokenized_dataset(
    tmp_path_factory: pytest.TempPathFactory,
    model_dir: Path,
    n_pairs: int,
    cfg: TokenizeConfig,
    seed: int = 0,
    split: SplitConfig | None = None,
) -> tuple[Path, dict]:
    """tokenize_pairs over make_pairs(n_pairs) (each pair its own source); returns (folder holding
    dataset/, report). Cached."""
    from tasks.tokenization.encode import tokenize_pairs

    split = split or SplitConfig(test_fraction=0.25)
    key = f"tok-{model_dir}-{n_pairs}-{cfg.model_dump_json()}-{split.model_dump_json()}-{seed}"
    if key not in _CACHE:
        pairs_dir = write_pairs(tmp_path_factory.mktemp("pairs"), make_pairs(n_pairs))
        out = tmp_path_factory.mktemp("tokenized")
        report = tokenize_pairs(pairs_dir / "pairs.jsonl", out, str(model_dir), cfg, split, seed)
        (out / "test_report.json").write_text(json.dumps(report))
        _CACHE[key] = out
    out = _CACHE[key]
    return out, json.loads((out / "test_report.json").read_text())
