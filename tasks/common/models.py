"""Model loading shared by every stage that runs a model: device choice, tokenizer, base, adapter, merge.

Training, evaluation, the local teacher and registration all load models the same way through here, so
a change of dtype or device policy happens in one place (and changes all of their keys).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# CPU features with native bf16 arithmetic: there oneDNN's bf16 matmuls ran 2.4-4.6x fp32 (a 1024x576 by
# 576x1536 product on 2 threads, 2026-12-07); without them bf16 is emulated and slower than fp32
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def pick_device(preference: str = "auto") -> str:
    """ "auto" takes CUDA when it is visible; "cuda" without a device is an error, not a silent CPU run."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively (its /proc/cpuinfo flags; False where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {
        f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()
    }
    return bool(CPU_BF16_FLAGS & flags)


def resolve_precision(requested: str, device: str, quantized: bool = False) -> str:
    """The compute precision on `device` for a precision setting `requested` (train.precision,
    evaluate.precision, synthesize.teacher.precision).

    "auto" takes bf16 where the device computes it natively (a CUDA device that has it, a CPU with
    AVX512-BF16 or AMX) and fp32 elsewhere. Training on the CPU autocasts over fp32 weights (the trainer's
    `bf16`), so LoRA parameters, gradients and optimizer state stay fp32; generation casts the weights.
    fp16 (a CUDA recipe's value), bf16 on a CPU without it and 4-bit bases (bitsandbytes' CPU kernels
    choose their own compute dtype) run fp32 there, as they always did."""
    if device == "cuda":
        if requested != "auto":
            return requested
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = requested in ("auto", "bf16") and not quantized and cpu_has_bf16()
    return "bf16" if native else "fp32"


def resolve_attention(requested: str, device: str, precision: str) -> str | None:
    """The attention kernel for train.attn_implementation `requested` (None: transformers' default, sdpa
    where the model supports it). "auto" takes FlashAttention-2 where it can run: a CUDA device, half
    precision and the flash-attn package (packed batches are then flattened, padding-free:
    tasks/training/collate.py). Asking for it where it cannot run is an error naming what is missing."""
    import importlib.util

    missing = [
        why
        for why, ok in (
            ("a CUDA device", device == "cuda"),
            ("train.precision bf16 or fp16", precision in ("bf16", "fp16")),
            ("the flash-attn package (pip install flash-attn)", importlib.util.find_spec("flash_attn")),
        )
        if not ok
    ]
    if requested == "auto":
        return None if missing else "flash_attention_2"
    if requested == "flash_attention_2" and missing:
        raise ValueError(f"train.attn_implementation flash_attention_2 needs {', '.join(missing)}")
    return requested


def gpu_resource(preference: str = "auto") -> tuple[str, ...]:
    """("gpu",) when work on this device should hold the "gpu" concurrency slot (flows/stage_tasks.py)."""
    return ("gpu",) if pick_device(preference) == "cuda" else ()


def load_tokenizer(path: str | Path, for_generation: bool = False):
    """The tokenizer saved beside a model; for generation, padded and truncated on the left.

    Decoder-only models continue from the last token, so a batch must end at every prompt's last token,
    and an over-long prompt loses its oldest text, never the "### Response:" that the answer follows.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if for_generation:
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
    return tokenizer


def load_causal_lm(
    path: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    quantization: Any = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """A causal LM from a save_pretrained folder, its weights in `precision` (a DTYPES key) on any device.
    Training on the CPU passes fp32 and autocasts (tasks/training/model.py); generation casts afterwards
    (`load_for_inference`). `attn_implementation`: None is transformers' default (`resolve_attention`)."""
    import torch
    from transformers import AutoModelForCausalLM

    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=getattr(torch, DTYPES[precision]),
        quantization_config=quantization,
        trust_remote_code=trust_remote_code,
        device_map={"": device} if quantization else None,
        **attention,
    )
    return model if quantization else model.to(device)


def load_for_inference(
    base_dir: str | Path,
    tuned_dir: str | Path | None = None,
    adapter: bool = True,
    trust_remote_code=False,
    precision: str = "auto",
):
    """The base model, or the fine-tuned one: full weights, or base + LoRA adapter merged, in `precision`
    resolved for the device (auto: bf16 where it is native; `resolve_precision`).

    Loaded and merged in fp32, then cast: the merge is exact, and a bf16 model is the fp32 one rounded
    once. Merged weights generate about twice as fast as a LoRA wrapper and give the same outputs.
    """
    device = pick_device()
    path = tuned_dir if tuned_dir is not None and not adapter else base_dir
    model = load_causal_lm(path, device, "fp32", trust_remote_code=trust_remote_code)
    if tuned_dir is not None and adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(tuned_dir)).merge_and_unload()
    return cast(model.eval(), resolve_precision(precision, device))


def cast(model, precision: str):
    """`model` with its floating-point weights in `precision` (a DTYPES key), in place."""
    import torch

    return model.to(getattr(torch, DTYPES[precision]))


def model_precision(model) -> str:
    """The DTYPES key of a model's weights."""
    names = {v: k for k, v in DTYPES.items()}
    return names[str(model.dtype).removeprefix("torch.")]


def takes_position_mask(model) -> bool:
    """Whether `model`'s forward (under its DDP and peft wrappers) takes a boolean (batch, length)
    `logits_to_keep` and projects only those positions onto the vocabulary: the causal LMs that ship with
    transformers 5 slice with its `slice_logits_to_keep`; remote code may not."""
    return slices_by_mask(type(unwrapped(model)))


def unwrapped(model):
    """The transformers model under its DDP and peft wrappers."""
    model = getattr(model, "module", model)  # DDP
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


@functools.cache
def slices_by_mask(model_class) -> bool:
    forward = model_class.forward
    module = inspect.getmodule(forward)
    takes_it = "logits_to_keep" in inspect.signature(forward).parameters
    return takes_it and module is not None and "slice_logits_to_keep" in vars(module)
