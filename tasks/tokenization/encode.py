"""Encode pairs into token ids with loss masking and truncation that keeps the response; split them."""

from __future__ import annotations

import random
from pathlib import Path

from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.common.io import iter_jsonl
from tasks.common.splits import eval_set_key, split_rows
from tasks.common.templates import get_template
from tasks.tokenization.fim import FIM_PREFIX, fim_transform
from tasks.tokenization.packing import pack_rows

IGNORE = -100


def encode_pair(tokenizer, prompt: str, response: str, cfg: TokenizeConfig) -> tuple[dict, bool]:
    """Token ids for prompt + response + eos; labels hide the prompt when masking -> (row, truncated)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    truncated = len(prompt_ids) + len(response_ids) > cfg.max_length
    if truncated:
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


def tokenize_pairs(
    pairs_path: Path, out_dir: Path, model_path: str, cfg: TokenizeConfig, split: SplitConfig, seed: int
) -> dict:
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {model_path} has no eos token")
    if cfg.fim_rate > 0 and FIM_PREFIX not in tokenizer.get_vocab():
        raise ValueError(f"tokenize.fim_rate > 0 but the tokenizer at {model_path} has no {FIM_PREFIX} token")
    template = get_template(cfg.template)
    pairs = list(iter_jsonl(pairs_path))
    train_idx, test_idx, split_counts = split_rows(pairs, split, seed)
    rng = random.Random(seed)

    def encode(i: int, train: bool) -> tuple[dict, bool]:
        p = pairs[i]
        prompt = template.format(p["instruction"], p.get("input", ""))
        response = p["output"]
        if train and cfg.fim_rate and rng.random() < cfg.fim_rate:
            prompt, response = "", fim_transform(prompt + response, rng)  # FIM rows learn on every token
        row, truncated = encode_pair(tokenizer, prompt, response, cfg)
        text = {"prompt": prompt, "response": p["output"], "input": p.get("input", ""), "id": p["id"]}
        return {**row, **text}, truncated

    train = [encode(i, True) for i in train_idx]
    test = [encode(i, False) for i in test_idx]
    truncated = sum(t for _, t in train + test)
    train_rows = [r for r, _ in train]
    if cfg.packing:
        train_rows = pack_rows(train_rows, cfg.max_length)
    DatasetDict(
        {"train": Dataset.from_list(train_rows), "test": Dataset.from_list([r for r, _ in test])}
    ).save_to_disk(str(out_dir / "dataset"))
    template.save(out_dir)  # travels on with the model (tasks/common/templates.py)
    train_tokens = sum(len(r["input_ids"]) for r in train_rows)
    return {
        "eval_set_key": eval_set_key([r for r, _ in test]),
        "split": split_counts,
        "rows_in": len(pairs),
        "rows_out": len(train_rows) + len(test),
        "train_rows": len(train_rows),
        "test_rows": len(test),
        "truncated": truncated,
        "train_tokens": train_tokens,
        "loss_tokens": sum(sum(t != IGNORE for t in r["labels"]) for r in train_rows),
        "base_model": str(model_path),
        "template": cfg.template,
    }
