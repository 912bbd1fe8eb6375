"""Encode pairs into token ids with loss masking and truncation that keeps the response; split them.

A row that carries `messages` (a conversation) trains on every assistant turn: tasks/tokenization/
conversation.py encodes it, never with FIM."""

from __future__ import annotations

import random
from pathlib import Path

from pipeline_config.schema import SplitConfig, TokenizeConfig
from tasks.common.chat import conversation_problem
from tasks.common.io import iter_jsonl
from tasks.common.splits import eval_set_key, split_rows
from tasks.common.templates import resolve_template
from tasks.tokenization.conversation import ConversationEncoder
from tasks.tokenization.fim import FIM_MIDDLE, add_fim_tokens, fim_cut
from tasks.tokenization.packing import pack_rows, real_token_fraction
from tasks.tokenization.pair import IGNORE, encode_pair

# the tokenizer whose ids dataset/ holds (FIM sentinels added when the base lacked them): training loads it
TOKENIZER_DIR = "tokenizer"


TEMPLATE_FIELDS = {"instruction": True, "output": True, "input": False}  # field -> required


def check_fields(pairs: list[dict], path: Path, template: str) -> None:
    """Every row has what the template formats, as strings, and a `messages` value is a conversation: the
    first row without is named (a KeyError deep in encoding would name neither the file nor the line)."""
    for line, pair in enumerate(pairs, 1):
        if pair.get("messages") is not None and (problem := conversation_problem(pair["messages"])):
            raise ValueError(
                f"line {line} of {path} (id {pair.get('id', '?')!r}): 'messages' {problem}; a conversation "
                "is a list of {role, content} turns: at most one system turn, first, then user and "
                "assistant in turn, ending with an assistant turn"
            )
        for name, required in TEMPLATE_FIELDS.items():
            value = pair.get(name)
            if (value is None and not required) or (
                isinstance(value, str) and (value.strip() or not required)
            ):
                continue
            got = "no such field" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
            raise ValueError(
                f"tokenize.template '{template}' formats the field '{name}' (a "
                f"{'non-empty ' if required else ''}string), but line {line} of {path} "
                f"(id {pair.get('id', '?')!r}) has {got}"
            )


def tokenize_pairs(
    pairs_path: Path, out_dir: Path, model_path: str, cfg: TokenizeConfig, split: SplitConfig, seed: int
) -> dict:
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer at {model_path} has no eos token")
    fim_added = add_fim_tokens(tokenizer) if cfg.fim_rate > 0 else []
    template = resolve_template(cfg.template, tokenizer)
    pairs = list(iter_jsonl(pairs_path))
    check_fields(pairs, pairs_path, cfg.template)
    train_idx, test_idx, split_counts = split_rows(pairs, split, seed)
    rng = random.Random(seed)
    fim = {"rows": 0, "spm": 0, "ast": 0, "middle_cut_off": 0, "tokens_added": fim_added}

    # held-out rows are never dropped (the evaluation set must not depend on the training policy); an
    # over-long one keeps its response, for perplexity, and its whole prompt text, for generation
    eval_cfg = cfg.model_copy(update={"overlong": "truncate", "truncation_side": "left"})
    conversations = ConversationEncoder(tokenizer, template)

    def encode(i: int, train: bool) -> tuple[dict | None, bool]:
        p = pairs[i]
        if p.get("messages") is not None:
            return conversations.encode(p, cfg if train else eval_cfg, train)
        prompt = template.format(p["instruction"], p.get("input", ""))
        response = p["output"]
        row = None
        if train and cfg.fim_rate and rng.random() < cfg.fim_rate:
            row, truncated = fim_encode(prompt, response)
        if row is None:
            row, truncated = encode_pair(tokenizer, prompt, response, cfg if train else eval_cfg)
        if row is None:
            return None, truncated
        text = {"prompt": prompt, "response": p["output"], "input": p.get("input", ""), "id": p["id"]}
        return {**row, **text}, truncated

    def fim_encode(prompt: str, code: str) -> tuple[dict | None, bool]:
        """The code (never the template) reordered around a middle; None when there is nothing to cut or
        truncation cut the middle sentinel off (the row is then encoded plainly)."""
        cut = fim_cut(code, rng, cfg.fim_spm_rate, cfg.fim_ast_rate)
        if cut is None:
            return None, False
        row, truncated = encode_pair(tokenizer, prompt, cut.text, cfg)
        if row is not None and tokenizer.convert_tokens_to_ids(FIM_MIDDLE) not in row["input_ids"]:
            fim["middle_cut_off"] += 1
            return None, truncated
        if row is not None:
            fim["rows"] += 1
            fim["spm"] += cut.order == "spm"
            fim["ast"] += cut.middle != "random"
        return row, truncated

    train = [encode(i, True) for i in train_idx]
    test = [encode(i, False) for i in test_idx]
    truncated = sum(t for r, t in train + test if r is not None)
    dropped = sum(r is None for r, _ in train)
    train_rows = [r for r, _ in train if r is not None]
    by_source: dict[str, dict[str, int]] = {}
    for side, idx, encoded in (("train", train_idx, train), ("test", test_idx, test)):
        for i, (row, _) in zip(idx, encoded, strict=True):
            if row is not None:
                counts = by_source.setdefault(str(pairs[i].get("source")), {"train": 0, "test": 0})
                counts[side] += 1
    if not train_rows:
        why = (
            f"all {dropped} were over tokenize.max_length {cfg.max_length} (tokenize.overlong: "
            f"{cfg.overlong}, tokenize.truncation_side: {cfg.truncation_side})"
            if dropped
            else f"the split holds out all {len(pairs)} rows (split.test_fraction {split.test_fraction})"
        )
        raise ValueError(f"tokenize: no training rows left in {pairs_path}: {why}")
    train_examples = len(train_rows)
    if cfg.packing:
        train_rows = pack_rows(train_rows, cfg.max_length, seed)
    DatasetDict(
        {"train": Dataset.from_list(train_rows), "test": Dataset.from_list([r for r, _ in test])}
    ).save_to_disk(str(out_dir / "dataset"))
    tokenizer.save_pretrained(out_dir / "dataset" / TOKENIZER_DIR)
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
        "dropped_overlong": dropped,
        "train_examples": train_examples,  # before packing (train_rows counts packed blocks)
        "train_tokens": train_tokens,
        # tokens / (train rows x max_length): a packed block or a padded row each fill one max_length slot
        "real_token_fraction": round(
            real_token_fraction([len(r["input_ids"]) for r in train_rows], cfg.max_length), 4
        ),
        "fim": fim,
        "conversations": conversations.report(),
        "by_source": dict(sorted(by_source.items())),  # rows encoded per source, before packing
        "loss_tokens": sum(sum(t != IGNORE for t in r["labels"]) for r in train_rows),
        "base_model": str(model_path),
        "template": cfg.template,
    }
