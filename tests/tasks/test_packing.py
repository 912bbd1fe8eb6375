"""Tests for packing without cross-contamination (tasks/tokenization/packing.py, tasks/training/collate.py):
best-fit decreasing, whole examples with position ids that restart, and the proof that matters: the loss of
every example is the same packed and unpacked, on sdpa and eager, in our collator's layouts and through
TRL's SFTTrainer, while the old naive packing fails the same check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders import make_pairs, tokenized_dataset

from pipeline_config.schema import TokenizeConfig, TrainConfig
from tasks.tokenization.encode import IGNORE, encode_pair
from tasks.tokenization.packing import best_fit_decreasing, pack_block, pack_rows, real_token_fraction
from tasks.training.collate import PackedCollator, needs_flat_batches, positions

TOL = 1e-4

# --------------------------------------------------------------------------------------------------------
# Best-fit decreasing and the packed rows
# --------------------------------------------------------------------------------------------------------


def test_best_fit_decreasing_golden() -> None:
    # 6 opens a bin (4 left), 5 opens another, 4 fills the first exactly, 3 and 2 fill the second
    assert best_fit_decreasing([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]
    assert best_fit_decreasing([3, 3, 3], 10) == [[0, 1, 2]]
    assert best_fit_decreasing([10, 1, 10], 10) == [[0], [2], [1]]
    assert best_fit_decreasing([], 10) == []
    with pytest.raises(ValueError, match="longer than the block"):
        best_fit_decreasing([11], 10)


def test_best_fit_picks_the_tightest_bin() -> None:
    # after 7, 6, 5 (three bins, room 3, 4, 5) a 4 goes to the bin with room 4, not the first that fits
    assert best_fit_decreasing([7, 6, 5, 4], 10) == [[0], [1, 3], [2]]


def _row(tokens: list[int], masked: int = 0) -> dict:
    return {
        "input_ids": tokens,
        "attention_mask": [1] * len(tokens),
        "labels": [IGNORE] * masked + tokens[masked:],
    }


def test_pack_block_positions_labels_and_lengths() -> None:
    block = pack_block([_row([1, 2, 3], masked=1), _row([4, 5])])
    assert block == {
        "input_ids": [1, 2, 3, 4, 5],
        "labels": [IGNORE, 2, 3, IGNORE, 5],  # no example's first token is a target
        "position_ids": [0, 1, 2, 0, 1],
        "seq_lengths": [3, 2],
    }


def test_pack_rows_keeps_examples_whole_shuffled_and_seeded() -> None:
    rows = [_row(list(range(100 * i, 100 * i + n))) for i, n in enumerate([5, 9, 3, 7, 2, 8, 4, 6, 1, 9])]
    blocks = pack_rows(rows, 12, seed=0)
    assert all(len(b["input_ids"]) <= 12 for b in blocks)
    assert len(blocks) == 5  # 54 tokens: BFD finds the minimum, ceil(54 / 12)
    examples = []
    for b in blocks:
        assert sum(b["seq_lengths"]) == len(b["input_ids"]) == len(b["labels"]) == len(b["position_ids"])
        start = 0
        for n in b["seq_lengths"]:
            examples.append(b["input_ids"][start : start + n])
            assert b["position_ids"][start : start + n] == list(range(n))
            start += n
    assert sorted(examples) == sorted(r["input_ids"] for r in rows)  # every example once, whole
    assert pack_rows(rows, 12, seed=0) == blocks
    assert pack_rows(rows, 12, seed=1) != blocks  # rows (and blocks) are shuffled with the seed
    assert real_token_fraction([len(b["input_ids"]) for b in blocks], 12) == 54 / 60


# --------------------------------------------------------------------------------------------------------
# The collator
# --------------------------------------------------------------------------------------------------------


def test_collator_rows_pad_tail_is_its_own_segment() -> None:
    blocks = [pack_block([_row([1, 2, 3]), _row([4, 5])]), pack_block([_row([6, 7])])]
    batch = PackedCollator(pad_token_id=0)(blocks)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no 2D mask: it would hide the boundaries
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5], [IGNORE, 7, IGNORE, IGNORE, IGNORE]]
    flat = PackedCollator(pad_token_id=0, flatten=True)(blocks)
    assert flat["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]


def test_positions_from_seq_lengths_or_plain() -> None:
    assert positions({"input_ids": [1, 2, 3], "seq_lengths": [2, 1]}) == [0, 1, 0]
    assert positions({"input_ids": [1, 2, 3]}) == [0, 1, 2]
    assert positions({"input_ids": [1, 2], "position_ids": [0, 0]}) == [0, 0]


def test_flat_batches_only_for_flash_attention() -> None:
    def model(impl: str):
        return type("M", (), {"config": type("C", (), {"_attn_implementation": impl})()})()

    assert needs_flat_batches(model("flash_attention_2")) and needs_flat_batches(model("flash_attention_3"))
    assert not needs_flat_batches(model("sdpa")) and not needs_flat_batches(model("eager"))


# --------------------------------------------------------------------------------------------------------
# The loss of every example, packed and unpacked
# --------------------------------------------------------------------------------------------------------


def test_tokenize_pairs_packing(tmp_path_factory, tiny_model_dir: Path) -> None:
    """Whole examples in blocks (tests/tasks/test_packing.py has the loss equivalence); real-token fraction
    reported for both modes."""
    from datasets import load_from_disk

    cfg = TokenizeConfig(max_length=256, mask_prompt=False)
    plain, plain_report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 40, cfg, seed=0)
    packed, report = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 40, cfg.model_copy(update={"packing": True}), seed=0
    )
    train = load_from_disk(str(packed / "dataset"))["train"]
    plain_train = load_from_disk(str(plain / "dataset"))["train"]
    assert set(train.column_names) == {"input_ids", "labels", "position_ids", "seq_lengths"}
    assert report["train_examples"] == plain_report["train_examples"] == len(plain_train)
    assert report["train_rows"] == len(train) < len(plain_train)
    assert all(len(r) <= 256 for r in train["input_ids"])
    # every plain example is in exactly one block, whole, positions from 0, its first label ignored
    plain_rows = {tuple(r["input_ids"]): r["labels"] for r in plain_train}
    found = []
    for block in train:
        start = 0
        for n in block["seq_lengths"]:
            ids = tuple(block["input_ids"][start : start + n])
            assert block["position_ids"][start : start + n] == list(range(n))
            assert block["labels"][start : start + n] == [IGNORE, *plain_rows[ids][1:]]
            found.append(ids)
            start += n
    assert sorted(found) == sorted(plain_rows)
    assert report["train_tokens"] == plain_report["train_tokens"]
    # the fraction of max_length slots holding real tokens: packed blocks fill them, padded rows do not
    assert report["real_token_fraction"] == round(report["train_tokens"] / (len(train) * 256), 4)
    assert plain_report["real_token_fraction"] == round(
        plain_report["train_tokens"] / (len(plain_train) * 256), 4
    )
    # rows of ~110-150 tokens here: two fit a block at best, so packed ~0.74, padded ~0.5
    assert report["real_token_fraction"] > 1.3 * plain_report["real_token_fraction"]
    test_rows = len(load_from_disk(str(packed / "dataset"))["test"])
    assert report["test_rows"] == plain_report["test_rows"] == test_rows > 0  # the test split is never packed


@pytest.fixture(scope="module")
def examples(tiny_model_dir: Path) -> list[dict]:
    """20 encoded pairs, learning on every token (the case where a boundary target would count)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = TokenizeConfig(max_length=128, mask_prompt=False)
    rows = []
    for p in make_pairs(20):
        # a short prompt (the alpaca preamble alone nearly fills 128 tokens of this tiny tokenizer)
        row, _ = encode_pair(
            tokenizer, f"### Instruction:\n{p['instruction']}\n\n### Response:\n", p["output"], cfg
        )
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, examples: list[dict]) -> Path:
    """The tiny model after 40 steps on the examples (one at a time): a random model attends almost
    uniformly, so a leak across examples would barely move its loss; a trained one is sensitive."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(40):
        r = examples[step % len(examples)]
        batch = torch.tensor([r["input_ids"]])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = tmp_path_factory.mktemp("trained_tiny")
    model.save_pretrained(out)
    return out


def load(model_dir: Path, attn: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn).eval()


@torch.no_grad()
def token_losses(model, batch: dict) -> torch.Tensor:
    """Per-token cross entropy (0 where the label is ignored), aligned with the inputs: [b, t] is the loss
    of predicting token t+1's label from position t. use_cache=False, as TRL's compute_loss passes it."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )


def unpacked_losses(model, rows: list[dict]) -> list[float]:
    """Each example alone: the mean loss over its targets."""
    out = []
    for r in rows:
        batch = {"input_ids": torch.tensor([r["input_ids"]]), "labels": torch.tensor([r["labels"]])}
        out.append(model(**batch, use_cache=False).loss.item())
    return out


def packed_losses(model, blocks: list[dict], batch: dict, flat: bool) -> list[float]:
    """The mean loss of each example inside the packed batch, in block order then example order."""
    losses, counts = token_losses(model, batch), batch["labels"][:, 1:] != IGNORE
    out, offset = [], 0
    for b, block in enumerate(blocks):
        row, start = (0, offset) if flat else (b, 0)
        for n in block["seq_lengths"]:
            # the example's targets: positions start .. start+n-2 predict tokens start+1 .. start+n-1
            span = slice(start, start + n - 1)
            out.append((losses[row, span].sum() / counts[row, span].sum()).item())
            start += n
        offset += len(block["input_ids"])
    return out


def examples_in_block_order(rows: list[dict], blocks: list[dict]) -> list[dict]:
    by_ids = {tuple(r["input_ids"]): r for r in rows}
    out = []
    for block in blocks:
        start = 0
        for n in block["seq_lengths"]:
            out.append(by_ids[tuple(block["input_ids"][start : start + n])])
            start += n
    return out


def naive_batch(blocks: list[dict], rows_in_order: list[dict]) -> dict:
    """The old packing on the same blocks: concatenated, all-ones attention mask, positions running on,
    labels left as they were (each example's first token a target of the previous one's last)."""
    ids, labels = [], []
    start = 0
    for block in blocks:
        n = len(block["seq_lengths"])
        members = rows_in_order[start : start + n]
        start += n
        ids.append([t for r in members for t in r["input_ids"]])
        labels.append([t for r in members for t in r["labels"]])
    width = max(map(len, ids))
    return {
        "input_ids": torch.tensor([r + [0] * (width - len(r)) for r in ids]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
        "labels": torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels]),
    }


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("flat", [False, True], ids=["rows", "flat"])
def test_every_example_has_the_same_loss_packed_and_unpacked(
    examples: list[dict], trained_dir: Path, attn: str, flat: bool
) -> None:
    model = load(trained_dir, attn)
    blocks = pack_rows(examples, 128, seed=0)
    assert len(blocks) < len(examples) and max(len(b["seq_lengths"]) for b in blocks) >= 2
    assert any(len(b["input_ids"]) < max(len(x["input_ids"]) for x in blocks) for b in blocks)  # a pad tail
    ordered = examples_in_block_order(examples, blocks)
    batch = PackedCollator(pad_token_id=0, flatten=flat)(blocks)
    packed = packed_losses(model, blocks, batch, flat)
    reference = unpacked_losses(model, ordered)
    assert max(abs(a - b) for a, b in zip(packed, reference, strict=True)) < TOL
    # the model's own reduced loss (labels shifted inside the model): the token-weighted mean of the examples
    targets = [sum(t != IGNORE for t in r["labels"][1:]) for r in ordered]
    weighted = sum(loss * n for loss, n in zip(reference, targets, strict=True)) / sum(targets)
    with torch.no_grad():
        assert abs(model(**batch, use_cache=False).loss.item() - weighted) < TOL


def test_the_old_naive_packing_fails_the_same_check(examples: list[dict], trained_dir: Path) -> None:
    """Discriminating: the check above catches attention across examples and targets across boundaries."""
    model = load(trained_dir, "sdpa")
    blocks = pack_rows(examples, 128, seed=0)
    ordered = examples_in_block_order(examples, blocks)
    reference = unpacked_losses(model, ordered)
    batch = naive_batch(blocks, ordered)
    naive = packed_losses(model, blocks, {**batch, "labels": PackedCollator(0)(blocks)["labels"]}, flat=False)
    assert max(abs(a - b) for a, b in zip(naive, reference, strict=True)) > 100 * TOL  # attention leaks
    targets = [sum(t != IGNORE for t in r["labels"][1:]) for r in ordered]
    weighted = sum(loss * n for loss, n in zip(reference, targets, strict=True)) / sum(targets)
    with torch.no_grad():
        assert abs(model(**batch).loss.item() - weighted) > 100 * TOL
    # positions reset but labels not: targets across boundaries alone change the loss too
    fixed = PackedCollator(pad_token_id=0)(blocks)
    fixed["labels"][:, :] = batch["labels"]
    with torch.no_grad():
        assert abs(model(**fixed, use_cache=False).loss.item() - weighted) > 100 * TOL


def test_a_cached_forward_would_ignore_the_boundaries(examples: list[dict], trained_dir: Path) -> None:
    """Why use_cache=False matters: with a cache, transformers skips packed-sequence detection. TRL's
    compute_loss passes use_cache=False; this pins the behaviour the collator relies on."""
    model = load(trained_dir, "sdpa")
    blocks = pack_rows(examples, 128, seed=0)
    batch = PackedCollator(pad_token_id=0)(blocks)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        cached, uncached = model(**inputs, use_cache=True).logits, model(**inputs, use_cache=False).logits
    assert (cached - uncached).abs().max() > 100 * TOL


@pytest.mark.slow
def test_sft_trainer_loss_on_packed_batches_equals_unpacked(
    tmp_path_factory, tiny_model_dir: Path, trained_dir: Path, tmp_path: Path
) -> None:
    """Through the real wiring: tokenize with packing, SFTTrainer with our collator (as train_model builds
    it); the trainer's loss on a packed batch is the token-weighted mean of its examples' unpacked losses."""
    from datasets import load_from_disk
    from trl import SFTTrainer

    from tasks.common.models import load_tokenizer
    from tasks.training.recipe import training_args

    out, report = tokenized_dataset(
        tmp_path_factory, tiny_model_dir, 24, TokenizeConfig(max_length=256, mask_prompt=False, packing=True)
    )
    train = load_from_disk(str(out / "dataset"))["train"]
    assert {"position_ids", "seq_lengths"} <= set(train.column_names)
    model = load(trained_dir, "sdpa")
    tokenizer = load_tokenizer(tiny_model_dir)
    args = training_args(TrainConfig(device="cpu", batch_size=4, max_steps=1), tmp_path, "cpu", 0, False)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train.select_columns(["input_ids", "labels", "seq_lengths"]),
        processing_class=tokenizer,
        data_collator=PackedCollator(tokenizer.pad_token_id),
    )
    rows = examples_seen = 0
    for batch in trainer.get_train_dataloader():
        assert "position_ids" in batch and "attention_mask" not in batch
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        # the same examples one by one
        losses, targets = [], []
        for ids, labels, pos in zip(
            batch["input_ids"].tolist(), batch["labels"].tolist(), batch["position_ids"].tolist(), strict=True
        ):
            starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
            for a, b in zip(starts, starts[1:], strict=False):
                if all(t == IGNORE for t in labels[a:b]):
                    continue  # the pad tail
                example = {"input_ids": torch.tensor([ids[a:b]]), "labels": torch.tensor([labels[a:b]])}
                with torch.no_grad():
                    losses.append(model(**example, use_cache=False).loss.item())
                targets.append(sum(t != IGNORE for t in labels[a + 1 : b]))
        weighted = sum(loss * n for loss, n in zip(losses, targets, strict=True)) / sum(targets)
        assert abs(loss - weighted) < TOL
        rows, examples_seen = rows + len(batch["input_ids"]), examples_seen + len(losses)
    assert rows == len(train) and examples_seen == report["train_examples"] > rows  # several per row
