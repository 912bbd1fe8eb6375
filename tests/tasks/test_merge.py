"""The adapter merge: the merged weights give the adapter's logits, a bad merge is an error, a QLoRA
adapter is merged into the 4-bit weights it was trained against, and added tokens survive the merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline_config.schema import TrainConfig
from tasks.training.merge import MergeMismatch, merge_adapter

INPUTS = [[5, 17, 42, 9, 3, 88, 21], [7, 7, 1, 64, 30]]


def make_adapter(base_dir: Path, out: Path, quantized: bool = False, added_tokens: int = 0) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so that merging it changes every wrapped layer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tasks.training.model import quantization_config

    torch.manual_seed(3)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    quant = quantization_config(qlora_cfg()) if quantized else None
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant)
    extra = None
    if added_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": [f"<x{i}>" for i in range(added_tokens)]})
        base.resize_token_embeddings(len(tokenizer))
        extra = ["embed_tokens", "lm_head"]
    lora = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules="all-linear",
        init_lora_weights=False,
        modules_to_save=extra,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    if added_tokens:  # the new rows as training would leave them: learned, not the resize's mean
        with torch.no_grad():
            model.base_model.model.model.embed_tokens.modules_to_save["default"].weight[-added_tokens:] += 1.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def qlora_cfg() -> TrainConfig:
    return TrainConfig(method="qlora", device="cpu", quantization={"compute_dtype": "float32"})


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([ids])).logits


def test_lora_merge_matches_the_adapter_and_is_saved(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    report = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", TrainConfig(), INPUTS, "cpu")
    assert report["prompts"] == 2 and report["max_abs_logit_diff"] <= 1e-3
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for ids in INPUTS:
        assert torch.allclose(logits(merged, ids), logits(unmerged, ids), atol=1e-4)
        assert not torch.allclose(logits(merged, ids), logits(base, ids), atol=1e-2)  # the adapter is in


def test_the_merge_of_a_bf16_run_is_checked_in_fp32_and_stored_in_fp32_on_the_cpu(tiny_model_dir, tmp_path):
    """train.precision bf16 on the CPU autocasts over fp32 weights, so the merge check compares fp32 with
    fp32 at merge_tolerance, and the merged model is stored, and loads back, in fp32. The report also gives
    what bf16 generation sees: the merged weights rounded to bf16, far above the merge's own difference
    but small beside the logits."""
    import json

    from transformers import AutoModelForCausalLM

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    cfg = TrainConfig(precision="bf16", device="cpu")
    report = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", cfg, INPUTS, "cpu")
    assert report["max_abs_logit_diff"] <= cfg.merge_tolerance and report["stored_dtype"] == "float32"
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["dtype"] == "float32"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").dtype == torch.float32
    scale = max(
        logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), ids).abs().max() for ids in INPUTS
    )
    assert report["max_abs_logit_diff"] < report["bf16_max_abs_logit_diff"] < 0.1 * float(scale)


def test_a_merge_that_changes_the_model_is_an_error(tiny_model_dir, tmp_path, monkeypatch):
    from peft.tuners.tuners_utils import BaseTuner

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    merge = BaseTuner.merge_and_unload

    def lossy_merge(self, *args, **kwargs):  # a merge that drops one layer's update
        model = merge(self, *args, **kwargs)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(0.5)
        return model

    monkeypatch.setattr(BaseTuner, "merge_and_unload", lossy_merge)
    with pytest.raises(MergeMismatch, match="train.merge_tolerance"):
        merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", TrainConfig(), INPUTS, "cpu")
    assert not (tmp_path / "merged").exists()  # nothing exported


def test_qlora_adapter_is_merged_into_the_weights_it_was_trained_against(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tasks.training.model import keep_4bit_layers_trainable, quantization_config

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", quantized=True)
    report = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", qlora_cfg(), INPUTS, "cpu")
    assert report["merged_into"] == "nf4-dequantized base" and report["max_abs_logit_diff"] <= 1e-3
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    as_trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, quantization_config=quantization_config(qlora_cfg())
        ),
        str(adapter),
    )
    keep_4bit_layers_trainable(as_trained)  # bitsandbytes' CPU inference repack fails on these tiny layers
    on_original = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter)
    )
    for ids in INPUTS:
        want = logits(as_trained, ids)
        assert (logits(merged, ids) - want).abs().max() < 1e-3
        # merging into the original weights would be a different model: the 4-bit error is not small
        assert (logits(on_original.merge_and_unload(), ids) - want).abs().max() > 1e-2


def test_added_tokens_survive_the_merge(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", added_tokens=2)
    vocab = len(AutoTokenizer.from_pretrained(adapter))
    report = merge_adapter(
        tiny_model_dir, adapter, tmp_path / "merged", TrainConfig(), [[vocab - 1, 5, vocab - 2]], "cpu"
    )
    assert report["max_abs_logit_diff"] <= 1e-3
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.get_input_embeddings().num_embeddings == vocab
    assert len(AutoTokenizer.from_pretrained(tmp_path / "merged")) == vocab
