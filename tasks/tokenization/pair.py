"""One (prompt, response) pair as token ids, with the loss masked on the prompt and truncation that keeps
the response: what every training and evaluation row is made of (tasks/tokenization/encode.py encodes a
pairs file with it; conversation.py each conversation's first exchange that does not fit)."""

from __future__ import annotations

from pipeline_config.schema import TokenizeConfig

IGNORE = -100


def encode_pair(tokenizer, prompt: str, response: str, cfg: TokenizeConfig) -> tuple[dict | None, bool]:
    """Token ids for prompt + response + eos; labels hide the prompt when masking -> (row, truncated).

    An example over `max_length` follows `tokenize.overlong` and `tokenize.truncation_side`; the row is
    None when it is dropped (overlong: drop, or a right cut that leaves no response token to learn)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = len(prompt_ids) + len(response_ids) > cfg.max_length
    if truncated and cfg.overlong == "drop":
        return None, True
    if (
        truncated and cfg.truncation_side == "right"
    ):  # the start stays, the end goes (the pythia-70m Q&A tutorial)
        response_ids = response_ids[: max(cfg.max_length - len(prompt_ids), 0)]
        if not response_ids:
            return None, True
    elif truncated:
        # A long prompt must not squeeze out the response (no loss tokens left): it gets at most half the
        # window, cut from the left so that its end ("### Response:") stays next to the response.
        keep = min(len(prompt_ids), max(cfg.max_length - len(response_ids), cfg.max_length // 2))
        prompt_ids = prompt_ids[len(prompt_ids) - keep :]
        response_ids = response_ids[: cfg.max_length - keep]
    prompt_labels = [IGNORE] * len(prompt_ids) if cfg.mask_prompt else prompt_ids
    input_ids = prompt_ids + response_ids
    row = {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": prompt_labels + response_ids,
    }
    return row, truncated
