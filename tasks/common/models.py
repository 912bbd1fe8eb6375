"""Model loading shared by every stage that runs a model: device choice, tokenizer, base, adapter, merge.

Training, evaluation, the local teacher and registration all load models the same way through here, so
a change of dtype or device policy happens in one place (and changes all of their keys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pick_device(preference: str = "auto") -> str:
    """ "auto" takes CUDA when it is visible; "cuda" without a device is an error, not a silent CPU run."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


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
):
    """A causal LM from a save_pretrained folder; half precision only on CUDA (CPU kernels want fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, DTYPES[precision]) if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype,
        quantization_config=quantization,
        trust_remote_code=trust_remote_code,
        device_map={"": device} if quantization else None,
    )
    return model if quantization else model.to(device)


def load_for_inference(
    base_dir: str | Path, tuned_dir: str | Path | None = None, adapter: bool = True, trust_remote_code=False
):
    """The base model, or the fine-tuned one: full weights, or base + LoRA adapter merged.

    Merged weights generate about twice as fast as a LoRA wrapper and give the same outputs.
    """
    device = pick_device()
    precision = "bf16" if device == "cuda" else "fp32"
    path = tuned_dir if tuned_dir is not None and not adapter else base_dir
    model = load_causal_lm(path, device, precision, trust_remote_code=trust_remote_code)
    if tuned_dir is not None and adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(tuned_dir)).merge_and_unload()
    return model.eval()
