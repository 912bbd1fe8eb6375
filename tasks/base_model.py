"""The base model every later stage starts from.

A hub id or local folder is used as it is. A `model.scratch` profile (the offline default) builds a small
causal LM from a config, with a byte-level BPE tokenizer trained on the scraped source; both are saved
with save_pretrained and read back through from_pretrained, exactly as a hub model would be. The build
is content-addressed like a stage (`<workspace>/stages/base_model/<key>/`), so the stages that need it
share one copy and it is rebuilt only when the model config or the scraped corpus changes.
"""

from __future__ import annotations

from pathlib import Path

from pipeline_config.schema import ModelConfig, ScratchModel
from tasks.stage import build_stage, file_version, iter_jsonl, logger, stage_key

EOS, PAD = "<|endoftext|>", "<|pad|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<fim_prefix>", "<fim_middle>", "<fim_suffix>"
SPECIAL_TOKENS = [EOS, PAD, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
CODE_VERSION = file_version(__file__)  # read once, at import, like every stage's SPEC


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style) on code: no unknown tokens, whitespace round-trips exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)
    fast.add_special_tokens({"additional_special_tokens": [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]})
    return fast


def build_model(cfg: ScratchModel, vocab_size: int, eos_id: int, pad_id: int, seed: int):
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


def pretrain(model, tokenizer, texts: list[str], cfg: ScratchModel, seed: int) -> list[float]:
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
            logger().info(
                "pretrain step %d/%d loss %.3f", len(losses), cfg.pretrain_steps, sum(recent) / len(recent)
            )
    model.eval()
    return losses


def build_scratch_model(scrape_dir: Path, out_dir: Path, cfg: ScratchModel, seed: int) -> dict:
    records = list(iter_jsonl(Path(scrape_dir) / "records.jsonl"))[: cfg.tokenizer_max_docs]
    if not records:
        raise ValueError(f"no scraped records in {scrape_dir} to train the scratch tokenizer on")
    texts = [r["code"] for r in records]
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    model = build_model(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed)
    losses = pretrain(model, tokenizer, texts, cfg, seed) if cfg.pretrain_steps else []
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    return {
        "rows_in": len(records),
        "rows_out": 1,
        "parameters": params,
        "vocab_size": len(tokenizer),
        "pretrain_steps": len(losses),
        "pretrain_first_loss": losses[0] if losses else None,
        "pretrain_last_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
    }


def resolve_base_model(
    model_cfg: ModelConfig, workspace: Path, scrape_dir: Path, scrape_key: str, seed: int
) -> str:
    """Return what from_pretrained should load: the configured hub id/folder, or the scratch build."""
    if model_cfg.name_or_path:
        return model_cfg.name_or_path
    cfg = model_cfg.scratch
    key = stage_key(
        "base_model",
        {"scratch": cfg.model_dump(), "seed": seed},
        {"scrape": scrape_key},
        file_version(__file__),
    )
    out = build_stage(
        workspace,
        "base_model",
        key,
        {"scrape": scrape_key},
        lambda out_dir: build_scratch_model(scrape_dir, out_dir, cfg, seed),
    )
    return out.path
