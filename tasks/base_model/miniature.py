"""A miniature of a profile's base model: its architecture class, tiny dimensions, random weights.

Hub weights cannot be downloaded everywhere (not here, not in CI), yet every recipe's mechanics (LoRA on
that architecture's module names, 4-bit quantization of its layers, its optimizer, template, FIM, packing)
must be provable. `model.miniature` builds the configured `model.architecture` from its transformers config
class with a few hundred thousand random parameters, and a byte-level BPE tokenizer trained on the scraped
code with the special tokens the real model's tokenizer has (BOS for LLaMA, FIM sentinels for StarCoder,
chat markers and a chat template for Phi-3). Saved with save_pretrained, read back with from_pretrained.

What each miniature keeps of the real model is in FAMILIES: the details that change how training runs
(fused projections, multi-query attention, partial rotary embeddings, tied or untied embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline_config.schema import MiniatureSection, ModelConfig
from tasks.base_model.scratch import train_tokenizer
from tasks.tokenization.fim import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

ENDOFTEXT = "<|endoftext|>"

# Phi-3's chat format (the phi-3-mini QLoRA recipe: "<|user|>\nQuestion <|end|>\n<|assistant|>").
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """How the real model's tokenizer and config look, as far as training can tell."""

    specials: dict[str, str]  # eos_token, bos_token, unk_token, pad_token
    extra: tuple[str, ...] = ()  # further special tokens
    add_bos: bool = False
    chat_template: str | None = None
    config: dict = field(default_factory=dict)  # fixed config values of the real family


FAMILIES = {
    # codegen-350M-mono: GPT-2 BPE, no pad token; rotary on half of each head (32 of 64), untied head
    "codegen": Family(
        {"eos_token": ENDOFTEXT, "bos_token": ENDOFTEXT, "unk_token": ENDOFTEXT},
        config={"tie_word_embeddings": False},
    ),
    # llama-7b: <s>, </s>, <unk>; BOS added to every sequence; no pad token; untied head
    "llama": Family(
        {"eos_token": "</s>", "bos_token": "<s>", "unk_token": "<unk>"},
        add_bos=True,
        config={"tie_word_embeddings": False},
    ),
    # Phi-3-mini-4k-instruct: fused qkv_proj and gate_up_proj; <|endoftext|> pads; chat markers, template
    "phi3": Family(
        {"eos_token": ENDOFTEXT, "bos_token": "<s>", "unk_token": "<unk>", "pad_token": ENDOFTEXT},
        extra=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        chat_template=PHI3_CHAT_TEMPLATE,
        config={"tie_word_embeddings": False},
    ),
    # starcoderbase-1b: multi-query attention, learned positions, FIM sentinels in the vocabulary, tied head
    "gpt_bigcode": Family(
        {"eos_token": ENDOFTEXT, "bos_token": ENDOFTEXT, "unk_token": ENDOFTEXT},
        extra=(FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, "<fim_pad>"),
        config={"multi_query": True, "tie_word_embeddings": True},
    ),
    # pythia-70m: rotary on a quarter of each head, parallel residual, untied head, no pad token
    "gpt_neox": Family(
        {"eos_token": ENDOFTEXT, "bos_token": ENDOFTEXT, "unk_token": ENDOFTEXT},
        config={"rotary_pct": 0.25, "use_parallel_residual": True, "tie_word_embeddings": False},
    ),
}


def build_tokenizer(architecture: str, texts: list[str], vocab_size: int):
    family = FAMILIES[architecture]
    tokenizer = train_tokenizer(texts, vocab_size, family.specials, family.extra)
    if family.add_bos:
        from tokenizers import processors

        bos = tokenizer.bos_token
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
    if family.chat_template:
        tokenizer.chat_template = family.chat_template
    return tokenizer


def model_config(architecture: str, mini: MiniatureSection, tokenizer):
    """The architecture's own config class with tiny dimensions and the tokenizer's special ids."""
    from transformers import CodeGenConfig, GPTBigCodeConfig, GPTNeoXConfig, LlamaConfig, Phi3Config

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **FAMILIES[architecture].config,
    }
    if architecture in ("codegen", "gpt_bigcode"):  # GPT-2 style names
        gpt = {
            "n_embd": mini.hidden_size,
            "n_layer": mini.num_layers,
            "n_head": mini.num_heads,
            "n_inner": mini.intermediate_size,
            "n_positions": mini.max_position_embeddings,
            **ids,
        }
        if architecture == "codegen":
            head_dim = mini.hidden_size // mini.num_heads
            return CodeGenConfig(n_ctx=mini.max_position_embeddings, rotary_dim=head_dim // 2, **gpt)
        return GPTBigCodeConfig(**gpt)
    config_class = {"llama": LlamaConfig, "phi3": Phi3Config, "gpt_neox": GPTNeoXConfig}[architecture]
    return config_class(
        hidden_size=mini.hidden_size,
        num_hidden_layers=mini.num_layers,
        num_attention_heads=mini.num_heads,
        intermediate_size=mini.intermediate_size,
        max_position_embeddings=mini.max_position_embeddings,
        **ids,
    )


def build_miniature(texts: list[str], out_dir: Path, model: ModelConfig, seed: int) -> dict:
    """Tokenizer + random model of `model.architecture`, saved to out_dir; returns the card facts."""
    import torch
    from transformers import AutoModelForCausalLM

    architecture, mini = model.architecture, model.miniature
    assert architecture is not None and mini is not None  # ModelConfig's validator guarantees both
    tokenizer = build_tokenizer(architecture, texts, mini.vocab_size)
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(model_config(architecture, mini, tokenizer))
    lm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    source = model.source
    replaced = getattr(source, "id", None) or getattr(source, "file", None) or getattr(source, "path", "")
    return {
        "name": f"miniature-{architecture}",
        "architecture": architecture,
        "model_class": type(lm).__name__,
        "origin": f"random weights in the architecture of {replaced} (model.miniature)",
        "license": None,
        "parameters": sum(p.numel() for p in lm.parameters()),
        "vocab_size": len(tokenizer),
    }
