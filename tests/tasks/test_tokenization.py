"""The tokenize stage's work function (tasks/tokenization/encode.py `tokenize_pairs`, with a tiny scratch
tokenizer; no model hub): the dataset on disk and its report after the seeded split, the truncated count,
and the rows and settings that stop the stage with a message naming the cause. One pair's encoding is
tested in test_encode.py, packing in test_packing.py, FIM rows in test_fim.py and the templates in
test_templates.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import ids, make_pairs, tokenized_dataset, write_pairs

from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.common.splits import eval_set_key, split_rows
from tasks.common.templates import format_prompt
from tasks.tokenization.encode import IGNORE, tokenize_pairs

COLUMNS = {"input_ids", "attention_mask", "labels", "prompt", "input", "response", "id"}


def test_tokenize_pairs_dataset_and_report(tmp_path_factory, tiny_model_dir: Path, tiny_tokenizer) -> None:
    from datasets import load_from_disk

    cfg = TokenizeConfig(max_length=256)
    split = SplitConfig(test_fraction=0.25)
    out, report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 20, cfg, seed=0, split=split)
    splits = load_from_disk(str(out / "dataset"))
    assert set(splits) == {"train", "test"}
    pairs = make_pairs(20)
    train_idx, test_idx, counts = split_rows(pairs, split, seed=0)
    assert len(splits["train"]) == len(train_idx) > len(splits["test"]) == len(test_idx) > 0
    assert set(splits["train"].column_names) == COLUMNS == set(splits["test"].column_names)

    assert splits["test"]["id"] == [pairs[i]["id"] for i in test_idx]
    assert splits["train"]["id"] == [pairs[i]["id"] for i in train_idx]
    first = splits["test"][0]
    src = pairs[test_idx[0]]
    assert first["prompt"] == format_prompt("alpaca", src["instruction"], src["input"])
    assert first["response"] == src["output"]
    assert first["input_ids"] == ids(tiny_tokenizer, first["prompt"]) + ids(tiny_tokenizer, src["output"]) + [
        tiny_tokenizer.eos_token_id
    ]

    train_rows = splits["train"].to_list()
    expected_loss_tokens = sum(len(ids(tiny_tokenizer, pairs[i]["output"])) + 1 for i in train_idx)
    assert report == {
        "eval_set_key": eval_set_key(splits["test"].to_list()),
        "split": counts,
        "rows_in": 20,
        "rows_out": 20,
        "train_rows": len(train_idx),
        "test_rows": len(test_idx),
        "truncated": 0,
        "dropped_overlong": 0,
        "train_examples": len(train_idx),
        "train_tokens": sum(len(r["input_ids"]) for r in train_rows),
        "real_token_fraction": round(
            sum(len(r["input_ids"]) for r in train_rows) / (len(train_rows) * 256), 4
        ),
        "fim": {"rows": 0, "spm": 0, "ast": 0, "middle_cut_off": 0, "tokens_added": []},
        "loss_tokens": expected_loss_tokens,
        "base_model": str(tiny_model_dir),
        "template": "alpaca",
        "conversations": {
            "rows": 0,
            "multi_turn": 0,
            "assistant_turns_trained": 0,
            "turns_dropped_by_truncation": 0,
        },
        "by_source": {"test": {"train": len(train_idx), "test": len(test_idx)}},
    }
    assert report["loss_tokens"] == sum(sum(t != IGNORE for t in r["labels"]) for r in train_rows)


def test_tokenize_pairs_truncated_count_and_max_test(
    tmp_path_factory,
    tiny_model_dir: Path,
    tiny_tokenizer,
) -> None:
    cfg = TokenizeConfig(max_length=120)
    split = SplitConfig(test_fraction=0.5, max_test_rows=3)
    out, report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 20, cfg, seed=1, split=split)
    pairs = make_pairs(20)
    train_idx, test_idx, _ = split_rows(pairs, split, seed=1)
    expected = sum(
        len(ids(tiny_tokenizer, format_prompt("alpaca", p["instruction"], p["input"])))
        + len(ids(tiny_tokenizer, p["output"]))
        + 1
        > 120
        for p in (pairs[i] for i in train_idx + test_idx)  # unused held-out rows are never encoded
    )
    assert 0 < expected < 13  # the fixture mixes short (no input) and long (with input) prompts
    assert report["truncated"] == expected
    assert report["test_rows"] == 3  # a sample of the held-out rows; the others are not trained on either
    assert report["train_rows"] == 20 - report["split"]["held_out_rows"] == len(train_idx)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"output": None}, "'output' (a non-empty string), but line 3 of"),
        ({"instruction": "   "}, "'instruction' (a non-empty string), but line 3 of"),
        ({"input": ["a", "list"]}, "'input' (a string), but line 3 of"),
    ],
)
def test_a_row_without_the_templates_field_is_named(
    tmp_path: Path, tiny_model_dir: Path, change, named
) -> None:
    rows = make_pairs(6)
    rows[2] = {k: v for k, v in {**rows[2], **change}.items() if v is not None}
    pairs = write_pairs(tmp_path, rows) / "pairs.jsonl"
    with pytest.raises(ValueError, match="tokenize.template 'alpaca'") as caught:
        tokenize_pairs(pairs, tmp_path, str(tiny_model_dir), TokenizeConfig(), SplitConfig(), 0)
    assert named in str(caught.value) and str(pairs) in str(caught.value) and "pair-002" in str(caught.value)
    assert not (tmp_path / "dataset").exists()


@pytest.mark.parametrize(
    ("cfg", "split", "cause"),
    [
        (
            TokenizeConfig(max_length=16, overlong="drop"),
            SplitConfig(test_fraction=0.01),
            "over tokenize.max_length 16",
        ),
        (
            TokenizeConfig(),
            SplitConfig(test_fraction=0.999),
            "all 6 rows are held out; lower split.test_fraction",
        ),
    ],
)
def test_nothing_left_to_train_on_names_the_cause(
    tmp_path: Path, tiny_model_dir: Path, cfg, split, cause
) -> None:
    pairs = write_pairs(tmp_path, make_pairs(6)) / "pairs.jsonl"
    with pytest.raises(ValueError) as caught:
        tokenize_pairs(pairs, tmp_path, str(tiny_model_dir), cfg, split, 0)
    assert cause in str(caught.value)
    assert not (tmp_path / "dataset").exists()
