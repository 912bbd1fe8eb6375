"""Tests for tasks/training/model.py: the quantization and LoRA configs carry the recipe's values and exist
only for the methods that use them; a QLoRA base really loads in 4-bit NF4 on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_builders import train_cfg

from pipeline_config.schema import LoraSection, QuantizationSection, TrainConfig
from tasks.training.model import load_model, lora_config, quantization_config


def test_quantization_config_4bit_carries_values() -> None:
    cfg = TrainConfig(
        method="qlora",
        quantization=QuantizationSection(
            bits=4, quant_type="nf4", double_quant=True, compute_dtype="bfloat16"
        ),
    )
    q = quantization_config(cfg)
    assert q.load_in_4bit is True and q.load_in_8bit is False
    assert q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant is True
    assert q.bnb_4bit_compute_dtype is torch.bfloat16


def test_quantization_config_other_values() -> None:
    cfg = TrainConfig(
        method="qlora",
        quantization=QuantizationSection(quant_type="fp4", double_quant=False, compute_dtype="float32"),
    )
    q = quantization_config(cfg)
    assert (q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        "fp4",
        False,
        torch.float32,
    )
    q8 = quantization_config(TrainConfig(method="qlora", quantization=QuantizationSection(bits=8)))
    assert q8.load_in_8bit is True and q8.load_in_4bit is False


@pytest.mark.parametrize("method", ["lora", "full"])
def test_quantization_config_only_for_qlora(method: str) -> None:
    assert quantization_config(TrainConfig(method=method)) is None


def test_lora_config_carries_values() -> None:
    cfg = TrainConfig(
        method="lora", lora=LoraSection(r=12, alpha=24, dropout=0.1, target_modules=["q_proj", "v_proj"])
    )
    lc = lora_config(cfg)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (12, 24, 0.1)
    assert set(lc.target_modules) == {"q_proj", "v_proj"}
    assert lc.bias == "none"
    assert lc.task_type == "CAUSAL_LM"
    assert lora_config(TrainConfig(method="lora")).target_modules == "all-linear"


def test_lora_config_for_qlora_and_none_for_full() -> None:
    cfg = TrainConfig(method="qlora", lora=LoraSection(r=4, alpha=8), quantization=QuantizationSection())
    assert (lora_config(cfg).r, lora_config(cfg).lora_alpha) == (4, 8)
    assert lora_config(TrainConfig(method="full")) is None


@pytest.mark.slow
def test_qlora_loads_the_base_in_4bit_nf4_on_cpu(tiny_model_dir: Path) -> None:
    """bitsandbytes >= 0.48 has CPU kernels: the weights really are 4-bit NF4 (tests/tasks/
    test_training_recipe.py trains on them)."""
    import bitsandbytes as bnb  # a dependency: missing, this test fails (QLoRA on the CPU is a feature)

    cfg = train_cfg("qlora", quantization=QuantizationSection(compute_dtype="float32"))
    model = load_model(str(tiny_model_dir), cfg, "cpu", trust_remote_code=False)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "nf4"
