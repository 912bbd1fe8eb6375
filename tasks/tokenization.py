"""Stage 4, tokenize: prompt templates, loss masking, FIM, packing and a seeded train/test split.

Input: the cleaned `pairs.jsonl`. Output: `dataset/` (datasets.save_to_disk) with `train` and `test`
splits holding `input_ids`, `attention_mask` and `labels` (-100 on prompt tokens when masking), plus the
`prompt` and `response` text that evaluation generates from and compares against.

Run alone: `finetune run --config pipeline_config/offline.yaml --only tokenize`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

from pipeline_config import PipelineConfig
from pipeline_config.schema import TokenizeConfig
from tasks.base_model import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, resolve_base_model
from tasks.stage import StageOutput, StageSpec, file_version, iter_jsonl, stage_task

IGNORE = -100

# Stanford Alpaca's two prompts (with and without an input), as in Code Alpaca (seeds/001).
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
# The codegen-350M-mono recipe's Instruction/Task/Input/Response layout (seeds/000).
CODEGEN_TASK = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a programming "
    "code that can solve the following Task:\n\n"
    "### Task:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def format_prompt(template: str, instruction: str, input_text: str = "") -> str:
    if template == "alpaca":
        chosen = ALPACA_WITH_INPUT if input_text.strip() else ALPACA_NO_INPUT
    elif template == "codegen_task":
        chosen = CODEGEN_TASK
    else:
        raise ValueError(f"unknown tokenize.template {template!r}")
    return chosen.format(instruction=instruction.strip(), input=input_text.strip())


def fim_transform(text: str, rng: random.Random) -> str:
    """Prefix-Suffix-Middle reordering at two random character cut points (StarCoder's FIM format)."""
    if len(text) < 3:
        return text
    a, b = sorted(rng.sample(range(1, len(text)), 2))
    prefix, middle, suffix = text[:a], text[a:b], text[b:]
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"


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


def split_indices(
    n: int, test_fraction: float, max_test: int | None, seed: int
) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(n * test_fraction))
    if max_test:
        n_test = min(n_test, max_test)
    if n - n_test < 1:
        raise ValueError(f"tokenize: {n} cleaned rows are too few for a train/test split")
    return sorted(order[n_test:]), sorted(order[:n_test])


def tokenize_pairs(in_dir: Path, out_dir: Path, model_path: str, cfg: TokenizeConfig, seed: int) -> dict:
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {model_path} has no eos token")
    if cfg.fim_rate > 0 and FIM_PREFIX not in tokenizer.get_vocab():
        raise ValueError(f"tokenize.fim_rate > 0 but the tokenizer at {model_path} has no {FIM_PREFIX} token")
    pairs = list(iter_jsonl(Path(in_dir) / "pairs.jsonl"))
    train_idx, test_idx = split_indices(len(pairs), cfg.test_fraction, cfg.max_test_rows, seed)
    rng = random.Random(seed)

    def encode(i: int, train: bool) -> tuple[dict, bool]:
        p = pairs[i]
        prompt = format_prompt(cfg.template, p["instruction"], p.get("input", ""))
        response = p["output"]
        if train and cfg.fim_rate and rng.random() < cfg.fim_rate:
            prompt, response = "", fim_transform(prompt + response, rng)  # FIM rows learn on every token
        row, truncated = encode_pair(tokenizer, prompt, response, cfg)
        return {**row, "prompt": prompt, "response": p["output"], "id": p["id"]}, truncated

    train = [encode(i, True) for i in train_idx]
    test = [encode(i, False) for i in test_idx]
    truncated = sum(t for _, t in train + test)
    train_rows = [r for r, _ in train]
    if cfg.packing:
        train_rows = pack_rows(train_rows, cfg.max_length)
    DatasetDict(
        {"train": Dataset.from_list(train_rows), "test": Dataset.from_list([r for r, _ in test])}
    ).save_to_disk(str(out_dir / "dataset"))
    train_tokens = sum(len(r["input_ids"]) for r in train_rows)
    return {
        "rows_in": len(pairs),
        "rows_out": len(train_rows) + len(test),
        "train_rows": len(train_rows),
        "test_rows": len(test),
        "truncated": truncated,
        "train_tokens": train_tokens,
        "loss_tokens": sum(sum(t != IGNORE for t in r["labels"]) for r in train_rows),
        "base_model": model_path,
        "template": cfg.template,
    }


def run(cfg: PipelineConfig, inputs: Mapping[str, StageOutput], out_dir: Path, context: Mapping) -> dict:
    scrape = inputs["scrape"]
    model_path = resolve_base_model(cfg.model, cfg.workspace_path(), Path(scrape.path), scrape.key, cfg.seed)
    return tokenize_pairs(Path(inputs["clean"].path), out_dir, model_path, cfg.tokenize, cfg.seed)


SPEC = StageSpec("tokenize", run, ("tokenize", "model", "seed"), file_version(__file__))
TASK = stage_task(SPEC)
