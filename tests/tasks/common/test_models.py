"""Tests for tasks/common/models.py's device and precision choices: "auto" takes CUDA where there is one, and
asking for CUDA without one is an error that names the setting; "auto" precision takes bf16 where the device
computes it natively."""

from __future__ import annotations

import pytest
import torch

from pipeline_config.schema import TrainConfig
from tasks.common import models
from tasks.common.models import (
    cast,
    cpu_has_bf16,
    load_causal_lm,
    load_for_inference,
    model_precision,
    pick_device,
    resolve_attention,
    resolve_precision,
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_pick_device_cuda_without_cuda_raises() -> None:
    with pytest.raises(RuntimeError, match="train.device is 'cuda' but no CUDA device is visible"):
        pick_device(TrainConfig(device="cuda").device)


def test_pick_device_auto_and_cpu() -> None:
    assert pick_device(TrainConfig(device="cpu").device) == "cpu"
    assert pick_device(TrainConfig(device="auto").device) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_bf16_support_is_read_from_the_cpu_flags() -> None:
    assert cpu_has_bf16("processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512vl\n")
    assert cpu_has_bf16("flags : fpu amx_bf16 amx_tile\n")
    assert not cpu_has_bf16("flags : fpu sse avx2 avx512f avx512_vnni\n")  # AVX-512 alone emulates bf16
    assert not cpu_has_bf16("")


@pytest.mark.parametrize(
    ("requested", "native", "quantized", "expected"),
    [
        ("auto", True, False, "bf16"),
        ("auto", False, False, "fp32"),
        ("bf16", True, False, "bf16"),
        ("bf16", False, False, "fp32"),  # emulated bf16 is slower than fp32
        ("fp16", True, False, "fp32"),  # a CUDA recipe's value: no fp16 autocast on the CPU
        ("fp32", True, False, "fp32"),
        ("auto", True, True, "fp32"),  # a 4-bit base: bitsandbytes' CPU kernels choose for themselves
    ],
)
def test_precision_on_the_cpu(monkeypatch, requested, native, quantized, expected) -> None:
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
    assert resolve_precision(requested, "cpu", quantized) == expected


@pytest.mark.parametrize(("supported", "expected"), [(True, "bf16"), (False, "fp32")])
def test_precision_on_cuda(monkeypatch, supported, expected) -> None:
    # the choice only: no device is needed to ask what "auto" would take on one
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: supported)
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("fp16", "cuda") == "fp16"  # an explicit value is the recipe's


def test_the_default_precision_is_auto() -> None:
    assert TrainConfig().precision == "auto"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's choice")
@pytest.mark.parametrize(
    ("requested", "native", "expected"),
    [("auto", True, "bf16"), ("auto", False, "fp32"), ("bf16", False, "fp32"), ("fp32", True, "fp32")],
)
def test_inference_models_come_in_the_resolved_precision(
    monkeypatch, tiny_model_dir, requested, native, expected
) -> None:
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
    model = load_for_inference(tiny_model_dir, precision=requested)
    assert model_precision(model) == expected and not model.training
    # bf16 is the fp32 model rounded once
    reference = load_for_inference(tiny_model_dir, precision="fp32")
    for (name, ours), (_, theirs) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(ours, theirs.to(ours.dtype)), name


def test_a_saved_model_loads_back_in_the_dtype_recorded_with_it(tiny_model_dir, tmp_path) -> None:
    import json

    from transformers import AutoModelForCausalLM

    cast(load_causal_lm(tiny_model_dir), "bf16").save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert model_precision(AutoModelForCausalLM.from_pretrained(tmp_path)) == "bf16"
    # the stages ask for what they compute in: fp32 weights to train or to score likelihoods on the CPU
    assert model_precision(load_causal_lm(tmp_path)) == "fp32"


def test_attention_auto_takes_flash_only_where_it_runs(monkeypatch, tiny_model_dir) -> None:
    import importlib.util

    real = importlib.util.find_spec
    installed = lambda flag: lambda name: object() if name == "flash_attn" and flag else real(name)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", installed(True))
    assert resolve_attention("auto", "cuda", "bf16") == "flash_attention_2"
    assert resolve_attention("auto", "cuda", "fp32") is None  # flash kernels are half precision only
    assert resolve_attention("auto", "cpu", "bf16") is None
    monkeypatch.setattr(importlib.util, "find_spec", installed(False))
    assert resolve_attention("auto", "cuda", "bf16") is None
    with pytest.raises(
        ValueError, match=r"train.attn_implementation flash_attention_2 needs a CUDA device, .*flash-attn"
    ):
        resolve_attention("flash_attention_2", "cpu", "fp32")
    assert resolve_attention("eager", "cpu", "fp32") == "eager"
    eager = load_causal_lm(tiny_model_dir, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    assert load_causal_lm(tiny_model_dir).config._attn_implementation == "sdpa"  # transformers' default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_models_generate_in_its_bf16(tiny_model_dir) -> None:
    model = load_for_inference(tiny_model_dir)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert model.device.type == "cuda" and model_precision(model) == expected
