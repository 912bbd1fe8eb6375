"""The model the train stage trains: the base loaded (4-bit or 8-bit for QLoRA), its embeddings grown to
a tokenizer that gained tokens, and the LoRA config peft wraps it with. `train.method` is the switch:
`quantization_config` is None except for QLoRA, `lora_config` is None for a full fine-tune. A setting the
model or this machine cannot honour (a LoRA target the architecture lacks, no bitsandbytes) fails here,
before training, naming its key.
"""

from __future__ import annotations

from pipeline_config.schema import TrainConfig
from tasks.common.models import load_causal_lm, resolve_attention, resolve_precision, unwrapped
from tasks.common.runtime import logger


def quantization_config(cfg: TrainConfig):
    if cfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
    )


def lora_config(cfg: TrainConfig, modules_to_save: list[str] | None = None):
    """`modules_to_save`: layers trained in full beside the adapter (embeddings, when tokens were added)."""
    if cfg.method == "full":
        return None
    from peft import LoraConfig

    lora = cfg.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
        modules_to_save=modules_to_save,
        ensure_weight_tying=bool(modules_to_save),  # a tied lm_head stays the embedding's trained copy
    )


def embedding_modules(model) -> list[str]:
    """Names of the input and output embedding layers (the rows of added tokens must be trained)."""
    layers = (model.get_input_embeddings(), model.get_output_embeddings())
    return sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if any(m is x for x in layers)}
    )


def require_bitsandbytes(cfg: TrainConfig, device: str) -> None:
    """QLoRA runs on the CPU too (bitsandbytes >= 0.48 has CPU kernels: 4-bit NF4, double quantization)."""
    import importlib.metadata

    from packaging.version import Version

    try:
        version = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            "train.method 'qlora' needs bitsandbytes: pip install 'bitsandbytes>=0.48'"
        ) from None
    if device == "cpu" and Version(version) < Version("0.48"):
        raise ImportError(
            f"train.method 'qlora' on the CPU needs bitsandbytes >= 0.48 (CPU kernels); found {version}"
        )
    dtype = cfg.quantization.compute_dtype
    if device == "cpu" and cfg.quantization.bits == 4 and dtype != "float32":
        # it runs (bitsandbytes 0.50 computes in half precision on the CPU), but ~15x slower than float32
        # on a 512x512 layer here: keep the recipe's value, say what would be faster
        logger().info(
            "train.quantization.compute_dtype %s on the CPU: bitsandbytes %s runs it, but half-precision "
            "4-bit matmuls are much slower on a CPU than float32; set float32 for CPU runs",
            dtype,
            version,
        )


def linear_module_names(model) -> list[str]:
    """The last name part of every layer LoRA can wrap as a linear layer (bitsandbytes' 4-bit and 8-bit
    layers are nn.Linear subclasses; GPT-2 style models use transformers' Conv1D)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)}
    )


def check_target_modules(model, cfg: TrainConfig) -> None:
    """peft wraps the target names that match and silently skips the rest (it fails only when none
    match): a name this architecture lacks would leave layers the recipe meant to train frozen."""
    if cfg.method == "full" or not isinstance(cfg.lora.target_modules, list):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in cfg.lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        raise ValueError(
            f"train.lora.target_modules: {', '.join(missing)} not in this {model.config.model_type} model; "
            f"its linear modules: {', '.join(linear_module_names(model))} (or use 'all-linear')"
        )


def load_model(
    model_path: str, cfg: TrainConfig, device: str, trust_remote_code: bool, vocab_size: int | None = None
):
    """`vocab_size`: the tokenizer's size when tokenize added tokens; the embeddings grow to it (new rows
    start at the old rows' mean) before k-bit preparation hooks them."""
    quant = quantization_config(cfg)
    if quant:
        require_bitsandbytes(cfg, device)
    # on the CPU the weights stay fp32 and the trainer autocasts (its `bf16`): the optimizer needs fp32
    weights = cfg.precision if device == "cuda" else "fp32"
    attention = resolve_attention(cfg.attn_implementation, device, cfg.precision)
    model = load_causal_lm(model_path, device, weights, quant, trust_remote_code, attention)
    check_target_modules(model, cfg)
    if vocab_size and vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        keep_4bit_layers_trainable(model)
    return model


def keep_4bit_layers_trainable(model) -> None:
    """bitsandbytes 0.50 repacks a 4-bit layer's weight for its AVX512-BF16 inference kernel the first time
    the layer runs in eval mode without gradients on such a CPU, and never packs it back: after the first
    evaluation during training, every step ran that kernel, which has no backward (no gradient reached the
    layers below it; with a bias it raised). Training keeps the trainable layout."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def resolved(cfg: TrainConfig, device: str) -> TrainConfig:
    """`cfg` with train.precision resolved for `device` (auto: bf16 where it is native, else fp32) and
    train.compile (auto: where it can run, `can_compile`)."""
    precision = resolve_precision(cfg.precision, device, quantized=cfg.method == "qlora")
    compile_ = cfg.compile if cfg.compile != "auto" else cfg.method != "qlora" and can_compile(device)
    return cfg.model_copy(update={"precision": precision, "compile": compile_})


def can_compile(device: str) -> bool:
    """Inductor compiles for CUDA with Triton, for the CPU with a C++ compiler."""
    import shutil

    return device == "cuda" or any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def compile_blocks(model, device: str) -> int:
    """torch.compile, in place, every repeated block of `model` (the classes transformers lists in
    `_no_split_modules`: the decoder layers) with its LoRA layers inside: regional compilation, whose one
    graph serves every layer, so the compile costs one block's time however deep the model. Returns how
    many blocks were compiled; an error names what is missing (a C++ compiler, repeated blocks)."""
    if not can_compile(device):
        raise ValueError("train.compile on the CPU needs a C++ compiler (g++ or clang++) for inductor")
    inner = unwrapped(model)
    names = set(getattr(inner, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"train.compile: {type(inner).__name__} names no repeated blocks to compile")
    for block in blocks:
        block.compile()
    logger().info("compiled %d %s blocks (the first step compiles)", len(blocks), type(blocks[0]).__name__)
    return len(blocks)
