"""Benchmark decontamination: a row that contains benchmark text is dropped before anything trains on it.

Two tests, each with its own reason (the detail names the benchmark and the item):
- `contaminated_substring`: a benchmark item (at least `min_substring_chars` long) occurs in the row,
  case and whitespace folded; the check is anchored on 3 interior words of the item, so a row is
  compared only with the few items it could contain;
- `contaminated_ngram`: the row shares a word n-gram (13 by default, the GPT-3 convention) with an item.

What the benchmarks are: HumanEval (docstrings, solutions, prompt + solution), the project's own
held-out sets (the evaluation split's rows and the docstring examples of held-out scraped functions, from
which the scikit-learn doctest benchmark is drawn; these apply to training rows only, the held-out rows
are what is evaluated) and JSONL files named in the config.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.clean.shingles import WORD, contains, ngram_hashes, normalize, word_hashes
from tasks.common.filtering import Filter

ANCHOR = 3  # words: a row must contain one interior 3-gram of an item before the substring test runs


@dataclass(frozen=True)
class Item:
    benchmark: str
    item_id: str
    text: str


@dataclass
class BenchmarkIndex:
    """Items of one or more benchmarks, indexed for both tests; built once, shipped to the workers."""

    ngram: int
    min_substring_chars: int
    substrings: list[tuple[str, Item]] = field(default_factory=list)
    unanchored: list[int] = field(default_factory=list)  # items too short to anchor: always tested
    anchors: dict[int, list[int]] = field(default_factory=dict)
    anchor_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    gram_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    gram_items: list[Item] = field(default_factory=list)
    items: int = 0

    @classmethod
    def build(cls, items: Iterable[Item], ngram: int, min_substring_chars: int) -> BenchmarkIndex:
        index = cls(ngram, min_substring_chars)
        grams: dict[int, Item] = {}
        for item in items:
            index.items += 1
            text = normalize(item.text)
            if len(text) >= min_substring_chars:
                index._add_substring(text, item)
            hashes = ngram_hashes(item.text, ngram)
            if len(word_hashes(item.text)) >= ngram:
                for h in hashes.tolist():
                    grams.setdefault(h, item)
        index.anchor_keys = np.array(sorted(index.anchors), dtype=np.uint64)
        order = sorted(grams)
        index.gram_hashes = np.array(order, dtype=np.uint64)
        index.gram_items = [grams[h] for h in order]
        return index

    def _add_substring(self, text: str, item: Item) -> None:
        position = len(self.substrings)
        self.substrings.append((text, item))
        # the first and last words may be cut where the item sits inside a row; interior ones are whole.
        # The anchor is the interior 3 words with the most characters: "a Python function" would make
        # every instruction a candidate for every held-out instruction, "`gen_batches` that returns" not
        words = WORD.findall(text)
        if len(words) < ANCHOR + 2:
            self.unanchored.append(position)
            return
        lengths = [len(w) for w in words]
        window = [a + b + c for a, b, c in zip(lengths[1:], lengths[2:], lengths[3:-1], strict=False)]
        start = 1 + window.index(max(window))
        (anchor,) = ngram_hashes(" ".join(words[start : start + ANCHOR]), ANCHOR).tolist()
        self.anchors.setdefault(anchor, []).append(position)

    def __len__(self) -> int:
        return self.items

    def match(self, text: str) -> tuple[str, dict] | None:
        """(reason, detail) for the first contamination found in `text`, else None."""
        if not len(self):
            return None
        folded = normalize(text)
        candidates = list(self.unanchored)
        if self.anchors:
            present = ngram_hashes(text, ANCHOR, distinct=False)
            for h in set(present[contains(self.anchor_keys, present)].tolist()):
                candidates.extend(self.anchors[h])
        for position in sorted(candidates):
            item_text, item = self.substrings[position]
            if item_text in folded:
                return "contaminated_substring", _detail(item)
        if len(self.gram_hashes):
            grams = ngram_hashes(text, self.ngram, distinct=False)
            hits = grams[contains(self.gram_hashes, grams)]
            if len(hits):
                item = self.gram_items[int(np.searchsorted(self.gram_hashes, hits[0]))]
                return "contaminated_ngram", {**_detail(item), "shared_ngrams": len(np.unique(hits))}
        return None


def _detail(item: Item) -> dict:
    return {"benchmark": item.benchmark, "item": item.item_id}


def row_text(row: Mapping) -> str:
    return "\n".join(row.get(name) or "" for name in ("instruction", "input", "output"))


# --- the benchmarks ----------------------------------------------------------------------------------------


def humaneval_items() -> list[Item]:
    from tasks.common.benchmarks import humaneval_problems

    items = []
    for p in humaneval_problems():
        task = p["task_id"]
        items.append(Item("humaneval", task, p["prompt"] + p["canonical_solution"]))
        items.append(Item("humaneval", task, p["canonical_solution"]))
        docstring = _function_docstring(p["prompt"], p["entry_point"])
        if docstring:
            items.append(Item("humaneval", task, docstring))
    return items


def _function_docstring(code: str, name: str) -> str | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_docstring(node)
    return None


def held_out_items(held_out_rows: Iterable[Mapping], held_out_records: Iterable[Mapping]) -> list[Item]:
    """The evaluation split's instructions and reference outputs; the docstring examples of held-out
    scraped definitions (the doctest benchmark's checks)."""
    items = []
    for row in held_out_rows:
        items.append(Item("held_out", row["id"], row["instruction"]))
        items.append(Item("held_out", row["id"], row["output"]))
    for record in held_out_records:
        if examples := _examples_text(record.get("docstring") or ""):
            items.append(Item("sklearn_doctests", record["name"], examples))
    return items


def _examples_text(docstring: str) -> str:
    """The `>>>` lines of a docstring and the output each shows, in order."""
    import doctest

    try:
        examples = doctest.DocTestParser().get_examples(docstring)
    except ValueError:
        return ""
    return "\n".join(ex.source + ex.want for ex in examples)


def file_items(path: Path, fields: list[str]) -> list[Item]:
    """Every row's `fields` of a benchmark JSONL; a missing file or bad line is an error naming it."""
    import json

    items = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"clean.decontaminate.files: cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"clean.decontaminate.files: {path}:{n} is not JSON ({exc.msg})") from None
        for name in fields:
            if isinstance(row.get(name), str):
                items.append(Item(str(path), str(row.get("task_id") or row.get("id") or n), row[name]))
    return items


def decontamination_filter(everyone: BenchmarkIndex, training_only: BenchmarkIndex, is_held_out) -> Filter:
    """`everyone` applies to every row, `training_only` to rows that `is_held_out` says are trained on."""

    def check(row: dict):
        text = row_text(row)
        found = everyone.match(text)
        if found is None and not is_held_out(row):
            found = training_only.match(text)
        return (True, None) if found is None else (False, *found)

    return Filter("decontaminate", ("contaminated_substring", "contaminated_ngram"), check)
