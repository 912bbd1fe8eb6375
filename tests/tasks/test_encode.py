"""One pair into token ids (tasks/tokenization/encode.py `encode_pair`, with a tiny scratch tokenizer): loss
masking, truncation that cuts the prompt from the left and keeps the response, an exact fit, and the
overlong rules (drop, or a right cut that keeps the start). The whole stage's dataset is tested in
test_tokenization.py."""

from __future__ import annotations

from builders import ids

from pipeline_config.schema import TokenizeConfig
from tasks.base_model.scratch import EOS
from tasks.common.templates import format_prompt
from tasks.tokenization.encode import IGNORE, encode_pair

PROMPT = format_prompt("alpaca", "Write a Python function `square`.")
RESPONSE = "def square(x):\n    return x * x\n"


def test_encode_pair_masks_prompt(tiny_tokenizer) -> None:
    cfg = TokenizeConfig(max_length=256, mask_prompt=True)
    row, truncated = encode_pair(tiny_tokenizer, PROMPT, RESPONSE, cfg)
    p, r = ids(tiny_tokenizer, PROMPT), ids(tiny_tokenizer, RESPONSE)
    assert not truncated
    assert row["input_ids"] == p + r + [tiny_tokenizer.eos_token_id]
    assert row["attention_mask"] == [1] * (len(p) + len(r) + 1)
    assert row["labels"][: len(p)] == [IGNORE] * len(p)
    assert row["labels"][len(p) :] == row["input_ids"][len(p) :] == r + [tiny_tokenizer.eos_token_id]
    assert tiny_tokenizer.convert_ids_to_tokens(row["input_ids"][-1]) == EOS


def test_encode_pair_without_masking_learns_every_token(tiny_tokenizer) -> None:
    cfg = TokenizeConfig(max_length=256, mask_prompt=False)
    row, truncated = encode_pair(tiny_tokenizer, PROMPT, RESPONSE, cfg)
    assert not truncated
    assert row["labels"] == row["input_ids"]
    assert IGNORE not in row["labels"]
    assert row["input_ids"][-1] == tiny_tokenizer.eos_token_id


def test_truncation_cuts_long_prompt_from_the_left_and_keeps_response(tiny_tokenizer) -> None:
    long_prompt = format_prompt("alpaca", "Write a Python function `square`. " * 40)
    p, r = ids(tiny_tokenizer, long_prompt), ids(tiny_tokenizer, RESPONSE) + [tiny_tokenizer.eos_token_id]
    cfg = TokenizeConfig(max_length=64)
    assert len(p) > 64 > len(r)  # the case under test: the prompt alone overflows the window
    row, truncated = encode_pair(tiny_tokenizer, long_prompt, RESPONSE, cfg)
    keep = 64 - len(r)
    assert truncated
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"]) == 64
    assert row["input_ids"] == p[-keep:] + r  # left cut of the prompt, whole response + eos
    assert row["labels"] == [IGNORE] * keep + r
    prompt_part = row["input_ids"][:keep]
    tail = ids(tiny_tokenizer, "### Response:\n")
    assert prompt_part[-len(tail) :] == tail
    assert tiny_tokenizer.decode(prompt_part).endswith("### Response:\n")


def test_truncation_of_a_long_response_leaves_the_prompt_half_the_window(tiny_tokenizer) -> None:
    long_response = RESPONSE * 20
    p, r = ids(tiny_tokenizer, PROMPT), ids(tiny_tokenizer, long_response)
    cfg = TokenizeConfig(max_length=64)
    row, truncated = encode_pair(tiny_tokenizer, PROMPT, long_response, cfg)
    assert truncated
    assert len(row["input_ids"]) == 64
    assert row["input_ids"] == p[-32:] + r[:32]  # prompt gets max_length // 2, the response the rest
    assert sum(t != IGNORE for t in row["labels"]) == 32


def test_exact_fit_is_not_truncated(tiny_tokenizer) -> None:
    p, r = ids(tiny_tokenizer, PROMPT), ids(tiny_tokenizer, RESPONSE)
    n = len(p) + len(r) + 1
    assert encode_pair(tiny_tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=n))[1] is False
    row, truncated = encode_pair(tiny_tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=n - 1))
    assert truncated and len(row["input_ids"]) == n - 1


def test_overlong_drop_drops_and_right_truncation_keeps_the_start(tiny_tokenizer) -> None:
    long_response = RESPONSE * 20
    p, r = ids(tiny_tokenizer, PROMPT), ids(tiny_tokenizer, long_response)
    dropped, truncated = encode_pair(
        tiny_tokenizer, PROMPT, long_response, TokenizeConfig(max_length=64, overlong="drop")
    )
    assert dropped is None and truncated
    fits, _ = encode_pair(tiny_tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=256, overlong="drop"))
    assert fits is not None  # only over-long rows go
    right = TokenizeConfig(max_length=len(p) + 10, truncation_side="right")
    row, truncated = encode_pair(tiny_tokenizer, PROMPT, long_response, right)
    assert truncated and row["input_ids"] == p + r[:10]  # the whole prompt, the response's start
    assert row["labels"] == [IGNORE] * len(p) + r[:10]
    # a prompt that fills the window leaves nothing to learn: dropped, not a row without loss tokens
    assert (
        encode_pair(
            tiny_tokenizer, PROMPT, RESPONSE, TokenizeConfig(max_length=len(p), truncation_side="right")
        )[0]
        is None
    )
