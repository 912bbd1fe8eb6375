"""Tests for tasks/common/models.py's device choice: "auto" takes CUDA where there is one, and asking for
CUDA without one is an error that names the setting."""

from __future__ import annotations

import pytest
import torch

from pipeline_config.schema import TrainConfig
from tasks.common.models import pick_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_pick_device_cuda_without_cuda_raises() -> None:
    with pytest.raises(RuntimeError, match="train.device is 'cuda' but no CUDA device is visible"):
        pick_device(TrainConfig(device="cuda").device)


def test_pick_device_auto_and_cpu() -> None:
    assert pick_device(TrainConfig(device="cpu").device) == "cpu"
    assert pick_device(TrainConfig(device="auto").device) == ("cuda" if torch.cuda.is_available() else "cpu")
