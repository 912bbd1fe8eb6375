"""The memory training takes: its peak measured for the report (GPU memory, or on the CPU the resident
set), and what to change when a GPU runs out of it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pipeline_config.schema import TrainConfig


def reset_peak_memory(device: str) -> None:
    """Start the peak at training: the flow process has loaded (and dequantized) other models before."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):  # Linux >= 4.0: "5" resets the peak resident set (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: str) -> float:
    """Peak GPU memory allocated by torch during training, or on the CPU the process's peak resident set
    since `reset_peak_memory` (its lifetime peak where /proc cannot reset it)."""
    import resource

    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    with contextlib.suppress(OSError, IndexError, ValueError):
        status = Path("/proc/self/status").read_text()
        return round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)  # kB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def out_of_memory_advice(cfg: TrainConfig, detail: str) -> str:
    accumulate = cfg.grad_accum * 2
    return (
        f"training ran out of GPU memory ({detail.splitlines()[0] if detail else 'CUDA out of memory'}). "
        f"Lower train.batch_size (now {cfg.batch_size}) and raise train.grad_accum (now {cfg.grad_accum}, "
        f"e.g. {accumulate} with half the batch: the same effective batch), set "
        f"train.gradient_checkpointing: true (now {cfg.gradient_checkpointing}), "
        "shorten tokenize.max_length, "
        + (
            "or use train.method: qlora (4-bit base weights)."
            if cfg.method != "qlora"
            else "or a smaller train.lora.r."
        )
    )
