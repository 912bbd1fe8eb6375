"""Batches of packed blocks whose examples cannot see each other: boundaries travel as position ids.

A packed row (tasks/tokenization/packing.py) holds whole examples with `position_ids` restarting at 0 on
each. The batch carries those position ids and no 2D attention mask; transformers' masking utilities
(`find_packed_sequence_indices` in masking_utils) then build a block-diagonal causal mask for sdpa, eager
and flex attention, and flash-attention kernels take the same boundaries from flattened position ids.

Two layouts:
- per row (default): a (batch, longest row) tensor; a padded tail is given its own positions 0..k-1, so it
  is one more (ignored) segment that no real token attends to. Attention costs batch x row^2.
- flattened (`flatten=True`): every row concatenated into one (1, total) row, as TRL's padding-free
  collator does; what flash-attention kernels need (they read packing only from a single flattened row).
  On sdpa/eager its mask is total^2: batch times the attention work of the per-row layout.

Position ids come from the row's `position_ids`, else its `seq_lengths` (the column TRL's trainer keeps),
else 0..n-1 (the unpacked test split), so evaluation batches work the same way.
Labels were set at packing time (-100 on each example's first token), so nothing is predicted across a
boundary; pads get -100.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


@dataclass
class PackedCollator:
    pad_token_id: int
    flatten: bool = False

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        rows = []
        for ex in examples:
            ids = list(ex["input_ids"])
            rows.append((ids, list(ex.get("labels", ids)), positions(ex)))
        if self.flatten:
            rows = [tuple([t for row in rows for t in row[i]] for i in range(3))]
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, lab, pos) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids)
            labels[i, :n] = torch.tensor(lab)
            position_ids[i, :n] = torch.tensor(pos)
            position_ids[i, n:] = torch.arange(width - n)  # the pad tail: a segment of its own
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def positions(example: dict) -> list[int]:
    """Position ids of a row: stored, or restarting at each of its `seq_lengths` (TRL's column, which
    TRL keeps when it drops columns a model does not name), or 0..n-1 for a plain row."""
    if example.get("position_ids") is not None:
        return list(example["position_ids"])
    lengths = example.get("seq_lengths") or [len(example["input_ids"])]
    return [p for n in lengths for p in range(n)]


def needs_flat_batches(model) -> bool:
    """Flash-attention kernels find packed sequences only in one flattened row (transformers'
    `_is_packed_sequence` requires batch size 1); sdpa, eager and flex read them per row. Per row stays
    the default there: on CPU sdpa the flattened layout trained at 0.92x its tokens/s (benchmarks/
    train_bench.py packed_layout: 4x320 blocks, 2-layer SmolLM2 shape; its attention is 4x the work)."""
    impl = getattr(model.config, "_attn_implementation", None) or ""
    return "flash" in impl
