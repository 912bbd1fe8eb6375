"""Tests for tasks/common/models.py's device and precision choices: "auto" takes CUDA where there is one, and
asking for CUDA without one is an error that names the setting; "auto" precision takes bf16 where the device
computes it natively."""

from __future__ import annotations

import pytest
import torch

from pipeline_config.schema import TrainConfig
from tasks.common import models
from tasks.common.models import cpu_has_bf16, pick_device, resolve_precision


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
