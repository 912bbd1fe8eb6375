"""Tests for tasks/training/memory.py: running out of GPU memory ends in advice that names the settings to
change, with the values they have now."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_builders import train_cfg, train_job

from pipeline_config.schema import QuantizationSection
from tasks.training.memory import out_of_memory_advice
from tasks.training.recipe import train_model


def test_out_of_memory_in_training_names_the_settings_to_change(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trl import SFTTrainer

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SFTTrainer, "train", oom)
    with pytest.raises(torch.OutOfMemoryError) as caught:
        train_model(train_job(training_data, tiny_model_dir, tmp_path, train_cfg("lora")))
    message = str(caught.value)
    for key in (
        "train.batch_size (now 4)",
        "train.grad_accum",
        "train.gradient_checkpointing",
        "tokenize.max_length",
    ):
        assert key in message
    assert "train.method: qlora" in message and "Tried to allocate 2.00 GiB" in message


def test_out_of_memory_under_qlora_suggests_a_smaller_rank() -> None:
    cfg = train_cfg("qlora", quantization=QuantizationSection(), batch_size=8, grad_accum=2)
    advice = out_of_memory_advice(cfg, "")
    assert "train.batch_size (now 8)" in advice and "e.g. 4 with half the batch" in advice
    assert "CUDA out of memory" in advice  # no detail from torch: the advice still says what happened
    assert "a smaller train.lora.r" in advice and "train.method: qlora" not in advice
