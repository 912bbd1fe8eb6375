"""matmul_peak and train_precision (each described in its docstring): what bf16 buys on this CPU, the
machine's own matmul rate at the model's shapes beside the train stage's trainer in each precision.

Run alone: `python -m benchmarks.run matmul_peak train_precision`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs
from benchmarks.train_bench import (
    BATCH,
    LENGTH,
    REPEATS,
    STEPS,
    WARMUP,
    Timings,
    our_trainer,
    packed_rows,
    save_base,
    summary,
    train_config,
)

# SmolLM2-135M's MLP up-projection on a batch of 4 x 320 tokens, and its LM head on one row of them
SHAPES = {"mlp_up": (BATCH * LENGTH, 576, 1536), "lm_head": (LENGTH, 576, 49152)}


def repeated_product(x, y, times: int):
    return lambda: [x @ y for _ in range(times)]


@benchmark("matmul_peak")
def matmul_peak(products: int = 20, repeats: int = 5) -> dict:
    """The machine's measured matmul GFLOP/s in bf16 and fp32 at SmolLM2-135M's shapes (the MLP's
    1280x576 by 576x1536, the LM head's 320x576 by 576x49152), torch's own threads, median of 5 after a
    warm-up, the two dtypes in turn: the denominator of any MFU figure. value: bf16 GFLOP/s at the MLP
    shape; ratio = bf16 / fp32 there."""
    import torch

    from tasks.common.models import cpu_has_bf16

    rates = {}
    for shape_name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        contenders = {
            name: repeated_product(a.to(dtype), b.to(dtype), products)
            for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
        }
        runs = time_runs(contenders, repeats)
        flops = 2 * m * k * n * products
        rates[shape_name] = {name: round(flops / r.median / 1e9, 1) for name, r in runs.items()}
    mlp = rates["mlp_up"]
    return {
        "value": mlp["bf16"],
        "unit": "GFLOP/s",
        "ratio": round(mlp["bf16"] / mlp["fp32"], 2),
        "detail": {
            "gflops": rates,
            "shapes": {name: f"{m}x{k} @ {k}x{n}" for name, (m, k, n) in SHAPES.items()},
            "cpu_bf16": cpu_has_bf16(),
            "torch_threads": torch.get_num_threads(),
        },
    }


def stamping_callback(timings: Timings):
    from transformers import TrainerCallback

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            timings.ended = timings.begun = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            timings.begin()

        def on_step_end(self, args, state, control, **kwargs):
            timings.end()

    return Stamp()


@benchmark("train_precision")
def train_precision() -> dict:
    """Training tokens/s of the train stage's trainer (recipe.py `build_trainer`) in bf16 (what
    train.precision auto takes on a CPU with native bf16: autocast over fp32 weights) over the same
    trainer in fp32: the SmolLM2-shaped 2-layer model, LoRA and packed batches of train_throughput; the
    two run in turn, the other first on odd repeats, each from a fresh model, warm-up steps dropped;
    value: bf16 tokens/s; ratio = bf16 / fp32, the median of 4 per-repeat ratios (goal >= 2)."""
    from datasets import Dataset

    from tasks.common.models import cpu_has_bf16

    cfg = train_config(WARMUP + STEPS)
    contenders = {p: cfg.model_copy(update={"precision": p}) for p in ("bf16", "fp32")}
    runs: dict[str, list[Timings]] = {p: [] for p in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        base = save_base(Path(tmp) / "base")
        train = Dataset.from_list(packed_rows(BATCH * (WARMUP + STEPS)))
        for repeat in range(REPEATS):
            for precision in list(contenders)[:: -1 if repeat % 2 else 1]:
                trainer = our_trainer(base, train, contenders[precision], Path(tmp) / f"{precision}{repeat}")
                timings = Timings()
                trainer.add_callback(stamping_callback(timings))
                trainer.train()
                runs[precision].append(timings)
    result = summary(runs, "bf16", "fp32", BATCH * LENGTH, cfg)
    result["detail"].update(cpu_bf16=cpu_has_bf16(), order="one after the other, fp32 first on odd repeats")
    return result
