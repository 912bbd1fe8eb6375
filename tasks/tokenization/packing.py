"""Packing: whole examples into blocks of at most `max_length` tokens, each example isolated from the others.

A block is a list of whole examples (never one cut in two), chosen by best-fit decreasing after a seeded
shuffle, so neighbouring methods of one file do not land together by order. Each block row stores
`input_ids`, `labels`, `position_ids` that restart at 0 on every example, and `seq_lengths` (the examples'
lengths: TRL's column for the same thing). The position reset is the boundary signal: with no 2D attention
mask, transformers' masking utilities turn it into a block-diagonal causal mask (sdpa, eager, flex) or
varlen boundaries (flash attention), so attention stops at example boundaries; tasks/training/collate.py
builds the batches. The first token of every example has label -100: the model shifts labels by one, and
that target would otherwise be predicted from the previous example's last token.

`pack_rows` is what the tokenize stage calls; `best_fit_decreasing` is the bin choice alone.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort

IGNORE = -100


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices into `lengths` grouped into bins of total length <= capacity: longest first, each into the
    bin with the least room that still holds it, a new bin when none does. Ties keep the input order."""
    if too_long := [n for n in lengths if n > capacity]:
        raise ValueError(f"{len(too_long)} rows are longer than the block ({max(too_long)} > {capacity})")
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (space left, bin index), sorted: bisect finds the best fit
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        k = bisect_left(room, (n, -1))
        if k == len(room):
            bins.append([i])
            left, b = capacity - n, len(bins) - 1
        else:
            left, b = room.pop(k)
            bins[b].append(i)
            left -= n
        if left > 0:
            insort(room, (left, b))
    return bins


def pack_block(examples: list[dict]) -> dict:
    """One block row from whole examples (each with input_ids and labels)."""
    input_ids, labels, position_ids = [], [], []
    for ex in examples:
        n = len(ex["input_ids"])
        input_ids += ex["input_ids"]
        labels += [IGNORE, *ex["labels"][1:]]  # the model never predicts an example's first token
        position_ids += range(n)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "seq_lengths": [len(ex["input_ids"]) for ex in examples],
    }


def pack_rows(rows: list[dict], max_length: int, seed: int) -> list[dict]:
    """Whole rows (already truncated to max_length by encode) into blocks of at most max_length tokens."""
    rng = random.Random(seed)
    rows = [r for r in rows if r["input_ids"]]
    rng.shuffle(rows)
    bins = best_fit_decreasing([len(r["input_ids"]) for r in rows], max_length)
    rng.shuffle(bins)  # otherwise blocks run from the longest examples to the shortest
    return [pack_block([rows[i] for i in b]) for b in bins]


def real_token_fraction(lengths: list[int], slot: int) -> float:
    """Tokens over slots when every row occupies `slot` positions (a fixed-shape batch of max_length)."""
    return sum(lengths) / (len(lengths) * slot) if lengths else 0.0
