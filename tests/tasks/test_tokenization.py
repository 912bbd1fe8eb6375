"""Tests for tasks.tokenization: prompt templates, loss masking, truncation, packing, FIM, the seeded split
and the tokenize stage's dataset on disk (with a tiny scratch tokenizer; no model hub)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from builders import make_pairs, tokenized_dataset, write_pairs

from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.base_model.scratch import EOS
from tasks.common.splits import eval_set_key, split_rows
from tasks.common.templates import format_prompt
from tasks.tokenization.encode import IGNORE, TOKENIZER_DIR, encode_pair, tokenize_pairs
from tasks.tokenization.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, fim_transform

# --------------------------------------------------------------------------------------------------------
# format_prompt
# --------------------------------------------------------------------------------------------------------


CODEGEN_HEAD = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a "
    "programming code that can solve the following Task:\n\n### Task:\nReverse a list.\n\n"
)


@pytest.mark.parametrize(
    ("template", "instruction", "input_text", "expected"),
    [
        (
            "alpaca",
            "  Reverse a list.\n",
            "  xs = [1, 2]  ",
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nReverse a list.\n\n### Input:\nxs = [1, 2]\n\n### Response:\n",
        ),
        (
            "codegen_task",
            "Reverse a list.",
            "xs = [1, 2]",
            CODEGEN_HEAD + "### Input:\nxs = [1, 2]\n\n### Response:\n",
        ),
        # the codegen layout always has an Input block, empty when there is no input
        ("codegen_task", "Reverse a list.", "", CODEGEN_HEAD + "### Input:\n\n\n### Response:\n"),
    ],
    ids=["alpaca", "codegen_task", "codegen_task_without_input"],
)
def test_prompt_exact(template: str, instruction: str, input_text: str, expected: str) -> None:
    assert format_prompt(template, instruction, input_text) == expected


@pytest.mark.parametrize("input_text", ["", "   \n"])
def test_alpaca_prompt_without_input_has_no_input_block(input_text: str) -> None:
    got = format_prompt("alpaca", "Reverse a list.", input_text)
    assert got == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nReverse a list.\n\n"
        "### Response:\n"
    )
    assert "### Input:" not in got


def test_unknown_template_raises() -> None:
    with pytest.raises(ValueError, match="unknown tokenize.template 'chatml'"):
        format_prompt("chatml", "x")


# --------------------------------------------------------------------------------------------------------
# encode_pair
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


PROMPT = format_prompt("alpaca", "Write a Python function `square`.")
RESPONSE = "def square(x):\n    return x * x\n"


def test_encode_pair_masks_prompt(tokenizer) -> None:
    cfg = TokenizeConfig(max_length=256, mask_prompt=True)
    row, truncated = encode_pair(tokenizer, PROMPT, RESPONSE, cfg)
    p, r = ids(tokenizer, PROMPT), ids(tokenizer, RESPONSE)
    assert not truncated
    assert row["input_ids"] == p + r + [tokenizer.eos_token_id]
    assert row["attention_mask"] == [1] * (len(p) + len(r) + 1)
    assert row["labels"][: len(p)] == [IGNORE] * len(p)
    assert row["labels"][len(p) :] == row["input_ids"][len(p) :] == r + [tokenizer.eos_token_id]
    assert tokenizer.convert_ids_to_tokens(row["input_ids"][-1]) == EOS


def test_encode_pair_without_masking_learns_every_token(tokenizer) -> None:
    cfg = TokenizeConfig(max_length=256, mask_prompt=False)
    row, truncated = encode_pair(tokenizer, PROMPT, RESPONSE, cfg)
    assert not truncated
    assert row["labels"] == row["input_ids"]
    assert IGNORE not in row["labels"]
    assert row["input_ids"][-1] == tokenizer.eos_token_id


def test_truncation_cuts_long_prompt_from_the_left_and_keeps_response(tokenizer) -> None:
    long_prompt = format_prompt("alpaca", "Write a Python function `square`. " * 40)
    p, r = ids(tokenizer, long_prompt), ids(tokenizer, RESPONSE) + [tokenizer.eos_token_id]
    cfg = TokenizeConfig(max_length=64)
    assert len(p) > 64 > len(r)  # the case under test: the prompt alone overflows the window
    row, truncated = encode_pair(tokenizer, long_prompt, RESPONSE, cfg)
    keep = 64 - len(r)
    assert truncated
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"]) == 64
    assert row["input_ids"] == p[-keep:] + r  # left cut of the prompt, whole response + eos
    assert row["labels"] == [IGNORE] * keep + r
    prompt_part = row["input_ids"][:keep]
    tail = ids(tokenizer, "### Response:\n")
    assert prompt_part[-len(tail) :] == tail
    assert tokenizer.decode(prompt_part).endswith("### Response:\n")


def test_truncation_of_a_long_response_leaves_the_prompt_half_the_window(tokenizer) -> None:
    long_response = RESPONSE * 20
    p, r = ids(tokenizer, PROMPT), ids(tokenizer, long_response)
    cfg = TokenizeConfig(max_length=64)
    row, truncated = encode_pair(tokenizer, PROMPT, long_response, cfg)
    assert truncated
    assert len(row["input_ids"]) == 64
    assert row["input_ids"] == p[-32:] + r[:32]  # prompt gets max_length // 2, the response the rest
    assert sum(t != IGNORE for t in row["labels"]) == 32


def test_exact_fit_is_not_truncated(tokenizer) -> None:
    p, r = ids(tokenizer, PROMPT), ids(tokenizer, RESPONSE)
    n = len(p) + len(r) + 1
    assert encode_pair(tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=n))[1] is False
    row, truncated = encode_pair(tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=n - 1))
    assert truncated and len(row["input_ids"]) == n - 1


# --------------------------------------------------------------------------------------------------------
# fim_transform
# --------------------------------------------------------------------------------------------------------

CODE = "def square(x):\n    return x * x\n"


@pytest.mark.parametrize("seed", range(8))
def test_fim_psm_order_and_reassembly(seed: int) -> None:
    out = fim_transform(CODE, random.Random(seed))
    for token in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE):
        assert out.count(token) == 1
    assert out.startswith(FIM_PREFIX)
    assert out.index(FIM_PREFIX) < out.index(FIM_SUFFIX) < out.index(FIM_MIDDLE)
    prefix, rest = out[len(FIM_PREFIX) :].split(FIM_SUFFIX)
    suffix, middle = rest.split(FIM_MIDDLE)
    assert prefix and middle and suffix  # two distinct inner cut points
    assert prefix + middle + suffix == CODE
    assert fim_transform(CODE, random.Random(seed)) == out  # seeded


def test_fim_short_text_unchanged() -> None:
    assert fim_transform("ab", random.Random(0)) == "ab"


# --------------------------------------------------------------------------------------------------------
# tokenize_pairs (the stage's work function)
# --------------------------------------------------------------------------------------------------------

COLUMNS = {"input_ids", "attention_mask", "labels", "prompt", "input", "response", "id"}


def test_tokenize_pairs_dataset_and_report(tmp_path_factory, tiny_model_dir: Path, tokenizer) -> None:
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
    assert first["input_ids"] == ids(tokenizer, first["prompt"]) + ids(tokenizer, src["output"]) + [
        tokenizer.eos_token_id
    ]

    train_rows = splits["train"].to_list()
    expected_loss_tokens = sum(len(ids(tokenizer, pairs[i]["output"])) + 1 for i in train_idx)
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
    }
    assert report["loss_tokens"] == sum(sum(t != IGNORE for t in r["labels"]) for r in train_rows)


def test_tokenize_pairs_truncated_count_and_max_test(
    tmp_path_factory,
    tiny_model_dir: Path,
    tokenizer,
) -> None:
    cfg = TokenizeConfig(max_length=120)
    split = SplitConfig(test_fraction=0.5, max_test_rows=3)
    out, report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 20, cfg, seed=1, split=split)
    pairs = make_pairs(20)
    train_idx, test_idx, _ = split_rows(pairs, split, seed=1)
    expected = sum(
        len(ids(tokenizer, format_prompt("alpaca", p["instruction"], p["input"])))
        + len(ids(tokenizer, p["output"]))
        + 1
        > 120
        for p in (pairs[i] for i in train_idx + test_idx)  # unused held-out rows are never encoded
    )
    assert 0 < expected < 13  # the fixture mixes short (no input) and long (with input) prompts
    assert report["truncated"] == expected
    assert report["test_rows"] == 3  # a sample of the held-out rows; the others are not trained on either
    assert report["train_rows"] == 20 - report["split"]["held_out_rows"] == len(train_idx)


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


def test_tokenize_pairs_fim_rows_keep_the_prompt_and_cut_the_code(
    tmp_path_factory,
    tiny_model_dir: Path,
    tokenizer,
) -> None:
    from datasets import load_from_disk

    cfg = TokenizeConfig(max_length=256, fim_rate=1.0)
    out, report = tokenized_dataset(tmp_path_factory, tiny_model_dir, 20, cfg, seed=0)
    splits = load_from_disk(str(out / "dataset"))
    fim_ids = {tokenizer.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)}
    assert report["fim"]["rows"] == len(splits["train"]) and report["fim"]["tokens_added"] == []
    for row in splits["train"]:
        assert row["prompt"].startswith("Below is an instruction")  # the template is never cut
        n = len(ids(tokenizer, row["prompt"]))
        assert row["input_ids"][:n] == ids(tokenizer, row["prompt"]) and row["input_ids"][n] in fim_ids
        assert row["labels"][:n] == [IGNORE] * n and row["labels"][n:] == row["input_ids"][n:]
        assert fim_ids <= set(row["input_ids"])
    for row in splits["test"]:  # evaluation rows keep the plain prompt
        assert row["prompt"].startswith("Below is an instruction")
        assert not fim_ids & set(row["input_ids"])


def test_tokenize_pairs_adds_missing_fim_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        [CODE],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=[EOS, "<|pad|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token="<|pad|>").save_pretrained(
        tmp_path / "tok"
    )
    pairs_dir = write_pairs(tmp_path / "pairs", make_pairs(4))
    from transformers import AutoTokenizer

    report = tokenize_pairs(
        pairs_dir / "pairs.jsonl",
        tmp_path / "out",
        str(tmp_path / "tok"),
        TokenizeConfig(fim_rate=0.5),
        SplitConfig(test_fraction=0.5),
        0,
    )
    assert report["fim"]["tokens_added"] == [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "dataset" / TOKENIZER_DIR)
    assert len(saved) == len(AutoTokenizer.from_pretrained(tmp_path / "tok")) + 3
    # without FIM the same tokenizer is kept as it is
    split = SplitConfig(test_fraction=0.5)
    report = tokenize_pairs(
        pairs_dir / "pairs.jsonl", tmp_path / "out2", str(tmp_path / "tok"), TokenizeConfig(), split, 0
    )
    assert report["train_rows"] + report["test_rows"] == 4 and report["test_rows"] >= 1
    assert report["fim"]["tokens_added"] == []


def test_overlong_drop_drops_and_right_truncation_keeps_the_start(tokenizer) -> None:
    long_response = RESPONSE * 20
    p, r = ids(tokenizer, PROMPT), ids(tokenizer, long_response)
    dropped, truncated = encode_pair(
        tokenizer, PROMPT, long_response, TokenizeConfig(max_length=64, overlong="drop")
    )
    assert dropped is None and truncated
    fits, _ = encode_pair(tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=256, overlong="drop"))
    assert fits is not None  # only over-long rows go
    right = TokenizeConfig(max_length=len(p) + 10, truncation_side="right")
    row, truncated = encode_pair(tokenizer, PROMPT, long_response, right)
    assert truncated and row["input_ids"] == p + r[:10]  # the whole prompt, the response's start
    assert row["labels"] == [IGNORE] * len(p) + r[:10]
    # a prompt that fills the window leaves nothing to learn: dropped, not a row without loss tokens
    assert (
        encode_pair(tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=len(p), truncation_side="right"))[
            0
        ]
        is None
    )


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
