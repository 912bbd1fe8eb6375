"""A scratch base model: a small Llama or GPT-NeoX built from a config, with a byte-level BPE tokenizer
trained on the scraped source and, optionally, a short causal-LM pretraining on that code.

Both are saved with save_pretrained and read back through from_pretrained, exactly as a hub model would
be. Used by the `quick` and `tiny` profiles: seconds to build, no download.
"""

from __future__ import annotations

from pathlib import Path

from pipeline_config.schema import ScratchSource, SplitConfig
from tasks.common.io import iter_jsonl
from tasks.common.runtime import logger
from tasks.common.splits import group_of, is_held_out
from tasks.tokenization.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

EOS, PAD = "<|endoftext|>", "<|pad|>"


def train_tokenizer(
    texts: list[str],
    vocab_size: int,
    specials: dict[str, str] | None = None,
    extra: tuple[str, ...] = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX),
):
    """Byte-level BPE (GPT-2 style) on code: no unknown tokens, whitespace round-trips exactly.

    `specials` maps the tokenizer's roles (eos_token, bos_token, unk_token, pad_token) to their text; `extra`
    are further special tokens (FIM sentinels, chat markers). Special tokens take the first ids.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = specials if specials is not None else {"eos_token": EOS, "pad_token": PAD}
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys([*specials.values(), *extra])),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    if extra:
        fast.add_special_tokens({"additional_special_tokens": list(extra)})
    return fast


def build_model(cfg: ScratchSource, vocab_size: int, eos_id: int, pad_id: int, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    config = LlamaConfig(**common) if cfg.architecture == "llama" else GPTNeoXConfig(**common)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def pretrain(model, tokenizer, texts: list[str], cfg: ScratchSource, seed: int) -> list[float]:
    """Plain causal-LM training on concatenated code blocks; returns the loss of every step.

    A plain loop, not a Trainer: this is a fixture-sized model and the loop is ~3x faster per step here.
    """
    import torch

    ids = [t for doc in tokenizer(texts)["input_ids"] for t in [*doc, tokenizer.eos_token_id]]
    block = cfg.pretrain_block_size
    blocks = torch.tensor(ids[: len(ids) // block * block]).view(-1, block)
    if len(blocks) == 0:
        raise ValueError(f"the scraped corpus has fewer than {block} tokens: nothing to pretrain on")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.pretrain_lr, total_steps=cfg.pretrain_steps, pct_start=0.1
    )
    model.train()
    losses = []
    for _ in range(cfg.pretrain_steps):
        batch = blocks[torch.randint(len(blocks), (cfg.pretrain_batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if len(losses) % 50 == 0 or len(losses) == cfg.pretrain_steps:
            recent = losses[-50:]
            logger().info(  # a detail: to the log file and the Prefect UI, not the terminal (flows/quiet.py)
                "pretrain step %d/%d loss %.3f",
                len(losses),
                cfg.pretrain_steps,
                sum(recent) / len(recent),
                extra={"detail": True},
            )
    model.eval()
    return losses


def training_texts(records_path: Path, split: SplitConfig, seed: int, max_docs: int) -> tuple[list[str], int]:
    """The code of the scraped records outside the held-out split (at most `max_docs`), and how many
    records were excluded as held out: a tokenizer or pretraining must never read the evaluation code."""
    scraped = list(iter_jsonl(records_path))
    kept = [r for r in scraped if not is_held_out(group_of(r), split, seed)]
    if not kept:
        raise ValueError(f"no scraped records in {records_path} to train a tokenizer on")
    return [r["code"] for r in kept[:max_docs]], len(scraped) - len(kept)


def build_scratch_model(
    records_path: Path, out_dir: Path, cfg: ScratchSource, split: SplitConfig, seed: int
) -> dict:
    """Tokenizer and pretraining see only the sources outside the held-out split: a base model that had
    read the evaluation code would make "base vs fine-tuned" meaningless."""
    texts, excluded = training_texts(records_path, split, seed, cfg.tokenizer_max_docs)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    model = build_model(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    losses = pretrain(model, tokenizer, texts, cfg, seed) if cfg.pretrain_steps else []
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "rows_in": len(texts),
        "rows_out": 1,
        "held_out_records_excluded": excluded,
        "parameters": params,
        "vocab_size": len(tokenizer),
        "pretrain_steps": len(losses),
        "pretrain_first_loss": losses[0] if losses else None,
        "pretrain_last_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
    }
