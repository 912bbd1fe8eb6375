"""Merge a trained adapter into full weights, and prove the merge changed nothing before anyone uses it.

Evaluation, registration and serving all read the merged folder, so what is scored is exactly what is
exported. The check runs the adapter unmerged (as training ran it) and the merged model on a few held-out
prompts and compares their logits; a difference over `train.merge_tolerance` is an error, not a warning:
a bad merge (a missed module, an embedding that did not grow, a wrong scaling) would otherwise ship a
model that is not the one that was trained.

QLoRA: the adapter learned to correct the NF4-quantized base, not the original weights. It is merged into
the dequantized NF4 weights (the weights it was trained against), and the reference is the 4-bit model
with the adapter, computing in float32 so that the comparison measures the merge, not bfloat16 rounding.
"""

from __future__ import annotations

from pathlib import Path

from pipeline_config.schema import TrainConfig
from tasks.common.models import load_causal_lm, load_tokenizer
from tasks.training.model import resolved

CHECK_PROMPTS = 4
CHECK_TOKENS = 128  # per prompt: enough to reach every layer's typical inputs, cheap on a CPU


class MergeMismatch(ValueError):
    pass


def check_inputs(dataset_dir: Path, count: int = CHECK_PROMPTS) -> list[list[int]]:
    """Token ids of a few held-out examples (training rows when the test split is empty)."""
    from datasets import load_from_disk

    splits = load_from_disk(str(dataset_dir))
    rows = splits["test"] if len(splits["test"]) else splits["train"]
    return [list(r["input_ids"][:CHECK_TOKENS]) for r in rows.select(range(min(count, len(rows))))]


def merge_adapter(
    base_dir: str | Path,
    adapter_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    inputs: list[list[int]],
    device: str,
    trust_remote_code: bool = False,
) -> dict:
    """Write base + adapter as full weights (and the adapter's tokenizer) to `out_dir`; return the check."""
    import torch
    from peft import PeftModel

    tokenizer = load_tokenizer(adapter_dir)
    if cfg.method == "qlora":
        reference, base = _quantized_reference(
            base_dir, adapter_dir, cfg, device, len(tokenizer), trust_remote_code
        )
        expected = _logits(reference, inputs, device)
        del reference
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    else:
        base = _grown(load_causal_lm(base_dir, device, "fp32", None, trust_remote_code), len(tokenizer))
        model = PeftModel.from_pretrained(base, str(adapter_dir))
        expected = _logits(model, inputs, device)
        merged = model.merge_and_unload()
    got = _logits(merged, inputs, device)
    diff = max((e - g).abs().max().item() for e, g in zip(expected, got, strict=True))
    if not diff <= cfg.merge_tolerance:  # a NaN fails too
        raise MergeMismatch(
            f"merging the adapter in {adapter_dir} changed the model's logits by up to {diff:.3g} on "
            f"{len(inputs)} held-out prompts (train.merge_tolerance: {cfg.merge_tolerance}); the merged "
            "model would not be the trained one, so nothing was exported"
        )
    precision = resolved(cfg, device).precision
    if device == "cuda" and precision != "fp32":  # stored as the base was trained in
        merged = merged.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stored = str(merged.dtype).removeprefix("torch.")
    # what generation in bf16 (evaluate.precision auto on bf16 hardware) sees: the merged weights rounded
    # once; informational (bf16 keeps ~3 significant digits, so logits move by ~1e-2 of their scale)
    rounded = merged.to(torch.bfloat16)  # in place: the saved copy is what later stages load
    got_bf16 = _logits(rounded, inputs, device)
    bf16_diff = max((e - g).abs().max().item() for e, g in zip(expected, got_bf16, strict=True))
    return {
        "max_abs_logit_diff": diff,
        "tolerance": cfg.merge_tolerance,
        "bf16_max_abs_logit_diff": bf16_diff,
        "stored_dtype": stored,
        "prompts": len(inputs),
        "merged_into": "nf4-dequantized base" if cfg.method == "qlora" else "base",
    }


def _quantized_reference(base_dir, adapter_dir, cfg: TrainConfig, device: str, vocab: int, trust_remote_code):
    """The 4-bit base + adapter (as trained, float32 compute) and a full-precision base holding exactly the
    dequantized 4-bit weights, ready for the merge."""
    from peft import PeftModel
    from peft.utils.integrations import dequantize_bnb_weight

    from tasks.training.model import keep_4bit_layers_trainable, quantization_config

    exact = cfg.model_copy(
        update={"quantization": cfg.quantization.model_copy(update={"compute_dtype": "float32"})}
    )
    quantized = _grown(
        load_causal_lm(base_dir, device, "fp32", quantization_config(exact), trust_remote_code), vocab
    )
    keep_4bit_layers_trainable(quantized)  # the kernels training ran, not the CPU inference repack
    weights = {
        name: dequantize_bnb_weight(m.weight, getattr(m, "state", None)).float().cpu()
        for name, m in quantized.named_modules()
        if type(getattr(m, "weight", None)).__name__ in ("Params4bit", "Int8Params")
    }
    base = _grown(load_causal_lm(base_dir, device, "fp32", None, trust_remote_code), vocab)
    for name, weight in weights.items():
        base.get_submodule(name).weight.data.copy_(weight)
    return PeftModel.from_pretrained(quantized, str(adapter_dir)), base


def _grown(model, vocab: int):
    """Embeddings grown to the tokenizer's size, as training grew them when tokenize added FIM tokens."""
    if vocab > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab)
    return model


def _logits(model, inputs: list[list[int]], device: str) -> list:
    import torch

    model.eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids], device=device)).logits.float().cpu() for ids in inputs]
