"""Packing: many short examples into fixed-length blocks, so no compute is spent on padding."""

from __future__ import annotations


def pack_rows(rows: list[dict], block: int) -> list[dict]:
    """Constant-length packing: concatenate examples and cut into blocks of `block` tokens (tail dropped)."""
    ids = [t for r in rows for t in r["input_ids"]]
    labels = [t for r in rows for t in r["labels"]]
    blocks = []
    for start in range(0, len(ids) - block + 1, block):
        blocks.append(
            {
                "input_ids": ids[start : start + block],
                "attention_mask": [1] * block,
                "labels": labels[start : start + block],
            }
        )
    return blocks
