"""What the training tests build and read: a small CPU recipe, the job that trains it on a tokenized
folder, and the numbers read back from what training wrote."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_config.schema import LoraSection, TrainConfig
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.job import TrainJob


def train_cfg(method: str, **overrides) -> TrainConfig:
    values = dict(
        method=method,
        lora=LoraSection(r=4, alpha=8, dropout=0.0),
        device="cpu",
        precision="fp32",  # what these tests were written against; bf16 has its own tests
        learning_rate=1e-2,
        max_steps=30,
        batch_size=4,
        logging_steps=5,
        warmup_ratio=0.0,
    )
    return TrainConfig(**{**values, **overrides})


def train_job(
    data: Path, model_dir: Path, out: Path, cfg: TrainConfig, resume: Path | None = None
) -> TrainJob:
    """Training on the tokenized folder `data` (its dataset/ and prompt template), seed 0, into `out`."""
    return TrainJob(
        dataset_dir=data / "dataset",
        out_dir=out,
        model_path=str(model_dir),
        template_file=data / TEMPLATE_FILE,
        cfg=cfg,
        seed=0,
        resume_dir=resume,
    )


def lora_b_norm(adapter_dir: Path) -> float:
    """LoRA's B matrices start at zero: a non-zero norm shows the optimizer really stepped."""
    from safetensors.torch import load_file

    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    b = [t for name, t in tensors.items() if "lora_B" in name]
    assert b, f"no lora_B tensors in {sorted(tensors)}"
    return float(sum(t.float().norm() for t in b))


def base_parameters(model_dir: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())


def logged_losses(out_dir: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out_dir / "log_history.json").read_text()) if "loss" in h]
