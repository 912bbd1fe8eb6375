"""Benchmark decontamination: a row that carries a benchmark item's distinctive content is dropped before
anything trains on it; a phrase or an idiom that the whole corpus shares is not a leak.

How common each of an item's word n-grams (13 by default, the GPT-3 convention) is, and in how many rows
the whole item occurs, is counted over the corpus being cleaned before any row is judged: an n-gram in
at least the common threshold of rows (`common_fraction` of them, at least `common_min_rows`) is an
idiom or template text and is ignored. Two rules, each with its own reason (the detail names the rule,
the benchmark, the item and the matched span):
- `contaminated_substring`: the whole item (at least `min_substring_chars` long) occurs in the row, case
  and whitespace folded, and it identifies the item: it occurs in fewer rows than the common threshold,
  or it is at least `identifying_chars` long (no idiom is; an answer copied into many rows is still a
  leak). The test is anchored on 3 interior words of the item, so a row is compared only with the few
  items it could contain;
- `contaminated_ngram`: the row shares at least `min_overlap` of the item's distinctive n-grams, and at
  least `min_shared_ngrams` (all of them, for an item with fewer): a fraction of the answer, not one
  n-gram that a shared phrase produces.

What the benchmarks are: HumanEval (docstrings, solutions, prompt + solution), the project's own
held-out sets (the evaluation split's rows and the docstring examples of held-out scraped functions, from
which the scikit-learn doctest benchmark is drawn; these apply to training rows only, the held-out rows
are what is evaluated) and JSONL files named in the config.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline_config.schema.clean import DecontaminateConfig
from tasks.clean.shingles import WORD, contains, ngram_hashes, normalize, word_hashes
from tasks.common.filtering import Filter

ANCHOR = 3  # words: a row must contain one interior 3-gram of an item before the substring test runs
SPAN_CHARS = 200  # of a matched span, in a drop's detail


@dataclass(frozen=True)
class Item:
    benchmark: str
    item_id: str
    text: str


def row_fields(row: Mapping) -> tuple[str, str, str]:
    """A row's instruction, input and output: the one place that knows which fields hold a row's text. A
    chat row's prompt is every turn before its last answer (its `instruction` is only the first user
    turn), so decontamination and dedup read every turn."""
    if messages := row.get("messages"):
        return "\n".join(m["content"] for m in messages[:-1]), "", messages[-1]["content"]
    return tuple(row.get(name) or "" for name in ("instruction", "input", "output"))


def row_text(row: Mapping) -> str:
    return "\n".join(row_fields(row))


class Tally(NamedTuple):
    """Counts over some corpus rows (BenchmarkIndex.tally)."""

    rows: int
    gram_rows: np.ndarray
    substring_rows: np.ndarray


@dataclass
class BenchmarkIndex:
    """Items of one or more benchmarks, indexed for both rules; built once (with `count` over the corpus
    and `finish`), shipped to the workers."""

    cfg: DecontaminateConfig
    items: list[Item] = field(default_factory=list)
    substrings: list[tuple[str, int]] = field(default_factory=list)  # (folded text, item)
    unanchored: list[int] = field(default_factory=list)  # substrings too short to anchor: always tested
    anchors: dict[int, list[int]] = field(default_factory=dict)
    anchor_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    gram_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted, distinct
    gram_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # gram k: its items are
    gram_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [starts[k]:starts[k+1]]
    gram_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows holding each gram
    substring_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    rows_counted: int = 0
    distinctive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per gram, after finish
    item_grams: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # distinctive, per item
    needed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per item; 0: no n-gram rule
    identifying: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # per substring

    @classmethod
    def build(
        cls, items: Iterable[Item], cfg: DecontaminateConfig, corpus: Iterable[str] = ()
    ) -> BenchmarkIndex:
        """The index of `items`, with how common their n-grams are in `corpus` (the texts of the rows
        being cleaned; without one, nothing is common). Several indexes over one corpus: build each
        without it, `count` every text into each, then `finish` each."""
        index = cls(cfg)
        grams: dict[int, list[int]] = {}
        for item in items:
            position = len(index.items)
            index.items.append(item)
            text = normalize(item.text)
            if len(text) >= cfg.min_substring_chars:
                index._add_substring(text, position)
            if len(word_hashes(item.text)) >= cfg.ngram:
                for h in ngram_hashes(item.text, cfg.ngram).tolist():
                    grams.setdefault(h, []).append(position)
        index.anchor_keys = np.array(sorted(index.anchors), dtype=np.uint64)
        order = sorted(grams)
        index.gram_hashes = np.array(order, dtype=np.uint64)
        index.gram_starts = np.cumsum([0] + [len(grams[h]) for h in order], dtype=np.int64)
        index.gram_items = np.array([i for h in order for i in grams[h]], dtype=np.int64)
        index.gram_rows = np.zeros(len(order), np.int64)
        index.substring_rows = np.zeros(len(index.substrings), np.int64)
        if len(index.items):
            for text in corpus:
                index.count(text)
        index.finish()
        return index

    def _add_substring(self, text: str, item: int) -> None:
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
        return len(self.items)

    def count(self, text: str) -> None:
        """One corpus row: which of the items' n-grams it holds, which items it contains whole."""
        self.add(self.tally([text]))

    def tally(self, texts: Iterable[str]) -> Tally:
        """How many of `texts` hold each of the items' n-grams and contain each substring, without changing
        the index: chunks of the corpus are tallied apart (in workers) and `add`ed in any order."""
        gram_rows, substring_rows = np.zeros_like(self.gram_rows), np.zeros_like(self.substring_rows)
        rows = 0
        for text in texts:
            rows += 1
            if len(self.gram_hashes):
                grams = ngram_hashes(text, self.cfg.ngram)
                gram_rows[np.searchsorted(self.gram_hashes, grams[contains(self.gram_hashes, grams)])] += 1
            for position in self._containing(text):
                substring_rows[position] += 1
        return Tally(rows, gram_rows, substring_rows)

    def add(self, tally: Tally) -> None:
        self.rows_counted += tally.rows
        self.gram_rows += tally.gram_rows
        self.substring_rows += tally.substring_rows

    def finish(self) -> None:
        """What is common, now that the corpus is counted: per gram, per item, per substring."""
        cfg = self.cfg
        common = max(cfg.common_min_rows, math.ceil(cfg.common_fraction * self.rows_counted))
        self.distinctive = self.gram_rows < common
        per_item = np.bincount(
            self.gram_items[np.repeat(self.distinctive, np.diff(self.gram_starts))], minlength=len(self.items)
        )
        wanted = np.maximum(cfg.min_shared_ngrams, np.ceil(cfg.min_overlap * per_item)).astype(np.int64)
        self.item_grams, self.needed = per_item, np.minimum(per_item, wanted)
        long = np.array([len(text) >= cfg.identifying_chars for text, _ in self.substrings], dtype=bool)
        self.identifying = long | (self.substring_rows < common)

    def summary(self) -> dict:
        """For the report: items, n-grams indexed and ignored as common, substrings ignored as common."""
        return {
            "items": len(self),
            "ngrams": len(self.gram_hashes),
            "common_ngrams_ignored": int((~self.distinctive).sum()),
            "common_substrings_ignored": int((~self.identifying).sum()),
        }

    def _containing(self, text: str) -> list[int]:
        """The substrings that occur in `text`, in index order."""
        folded = normalize(text)
        candidates = list(self.unanchored)
        if self.anchors:
            present = ngram_hashes(text, ANCHOR, distinct=False)
            for h in set(present[contains(self.anchor_keys, present)].tolist()):
                candidates.extend(self.anchors[h])
        return [p for p in sorted(candidates) if self.substrings[p][0] in folded]

    def match(self, text: str) -> tuple[str, dict] | None:
        """(reason, detail) for the first contamination found in `text`, else None."""
        if not len(self):
            return None
        for position in self._containing(text):
            if self.identifying[position]:
                item_text, item = self.substrings[position]
                return "contaminated_substring", {**self._detail("substring", item), "span": _cut(item_text)}
        return self._ngram_match(text) if len(self.gram_hashes) else None

    def _ngram_match(self, text: str) -> tuple[str, dict] | None:
        grams = ngram_hashes(text, self.cfg.ngram, distinct=False)
        at = np.flatnonzero(contains(self.gram_hashes, grams))
        if not len(at):
            return None
        keys = np.searchsorted(self.gram_hashes, grams[at])
        useful = self.distinctive[keys]
        at, keys = at[useful], keys[useful]
        shared: dict[int, set[int]] = {}  # item: its distinctive grams the row holds
        places: dict[int, list[int]] = {}  # item: where in the row (word positions)
        for place, key in zip(at.tolist(), keys.tolist(), strict=True):
            for item in self.gram_items[self.gram_starts[key] : self.gram_starts[key + 1]].tolist():
                shared.setdefault(item, set()).add(key)
                places.setdefault(item, []).append(place)
        best = None
        for item, found in shared.items():
            need = self.needed[item]
            if need and len(found) >= need:
                overlap = len(found) / self.item_grams[item]
                if best is None or overlap > best[0]:
                    best = (overlap, item, found)
        if best is None:
            return None
        _, item, found = best
        span = _span(text, places[item], self.cfg.ngram)
        detail = {
            **self._detail("ngram", item),
            "shared_ngrams": len(found),
            "item_ngrams": int(self.item_grams[item]),
            "span": span,
        }
        return "contaminated_ngram", detail

    def _detail(self, rule: str, item: int) -> dict:
        return {"rule": rule, "benchmark": self.items[item].benchmark, "item": self.items[item].item_id}


def _span(text: str, places: list[int], n: int) -> str:
    """The row's text from the first to the last word of the longest run of matched n-grams."""
    places = sorted(set(places))
    runs, start = [], places[0]
    for a, b in zip(places, places[1:] + [None], strict=True):
        if b != a + 1:
            runs.append((start, a))
            start = b
    first, last = max(runs, key=lambda run: run[1] - run[0])
    words = list(WORD.finditer(text.lower()))
    return _cut(text.lower()[words[first].start() : words[min(last + n - 1, len(words) - 1)].end()])


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SPAN_CHARS else text[: SPAN_CHARS - 1] + "…"


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
