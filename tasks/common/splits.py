"""The held-out split, decided per source so that near-identical code never straddles train and test.

A row's group is its source: the scraped module file for scraped records and the pairs built from them,
a dataset's `group_by` column value for its rows (`metadata.group`), the row itself otherwise (a
Self-Instruct task has no source file, nor has a dataset record without a group). A group is held out
when a seeded hash of its name falls under `split.test_fraction`: a pure function of (group, seed,
fraction), so every stage that could see held-out code applies the same rule without reading another
stage's output (the tokenize split; the scratch model's pretraining corpus), and a source keeps its side
as the corpus grows nightly.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from pipeline_config.schema import SplitConfig
from tasks.common.io import hash_json


def group_of(row: Mapping) -> str:
    metadata = row.get("metadata") or {}
    return metadata.get("path") or metadata.get("group") or row.get("path") or f"row:{row['id']}"


def is_held_out(group: str, cfg: SplitConfig, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < cfg.test_fraction


def normalized(text: str) -> str:
    return " ".join(text.split())


def split_rows(rows: list[dict], cfg: SplitConfig, seed: int) -> tuple[list[int], list[int], dict]:
    """(train indices, test indices in a seeded random order, counts).

    Held-out rows beyond `max_test_rows` are not evaluated and not trained on. A training row whose code
    equals a held-out row's (the same method under two class names, a function copied between modules)
    is dropped: the leak check that the split by source cannot do alone.
    """
    held = [i for i, row in enumerate(rows) if is_held_out(group_of(row), cfg, seed)]
    if not held:
        raise ValueError(
            f"split: none of the {len({group_of(r) for r in rows})} sources fell in the held-out "
            f"{cfg.test_fraction:.0%}; raise split.test_fraction or change seed"
        )
    held_set = set(held)
    held_code = {normalized(rows[i]["output"]) for i in held}
    train, leaks = [], 0
    for i, row in enumerate(rows):
        if i in held_set:
            continue
        if normalized(row["output"]) in held_code:
            leaks += 1
            continue
        train.append(i)
    if not train:
        raise ValueError(f"split: all {len(rows)} rows are held out; lower split.test_fraction")
    random.Random(seed).shuffle(held)
    test = held[: cfg.max_test_rows] if cfg.max_test_rows else held
    counts = {
        "sources": len({group_of(r) for r in rows}),
        "held_out_sources": len({group_of(rows[i]) for i in held}),
        "held_out_rows": len(held),
        "held_out_unused": len(held) - len(test),
        "train_dropped_as_leak": leaks,
    }
    return train, test, counts


def eval_set_key(rows: list[Mapping]) -> str:
    """The evaluation set's content address, recorded with every score computed on it."""
    return hash_json([[r["id"], r["prompt"], r["response"]] for r in rows])
