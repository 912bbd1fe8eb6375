"""matmul_peak, train_precision and train_mfu (each described in its docstring): what bf16 buys on this
CPU, the machine's own matmul rate at the model's shapes beside the train stage's trainer in each precision
and the share of that rate training reaches. train_precision and train_mfu train the real SmolLM2-135M
(30 layers, dequantized from its GGUF file as the base_model stage does): the 2-layer model of
train_throughput spends most of a step in the LM head, which the real model does not.

Run alone: `python -m benchmarks.run matmul_peak train_precision train_mfu`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.model_bench import stored_base_model
from benchmarks.registry import benchmark
from benchmarks.timing import time_runs
from benchmarks.train_bench import (
    BATCH,
    LENGTH,
    STEPS,
    WARMUP,
    Timings,
    our_trainer,
    packed_rows,
    summary,
    train_config,
)

REAL_REPEATS = 3  # a real-model step takes 2-6 s
REAL_MODEL = "SmolLM2-135M-Instruct (30 layers, 135M parameters), its GGUF weights dequantized"

# SmolLM2-135M's MLP up-projection on a batch of 4 x 320 tokens, and its LM head on one row of them
SHAPES = {"mlp_up": (BATCH * LENGTH, 576, 1536), "lm_head": (LENGTH, 576, 49152)}


def repeated_product(x, y, times: int):
    return lambda: [x @ y for _ in range(times)]


@benchmark("matmul_peak")
def matmul_peak(products: int = 20, repeats: int = 5) -> dict:
    """The machine's measured matmul GFLOP/s in bf16 and fp32 at SmolLM2-135M's shapes (the MLP's
    1280x576 by 576x1536, the LM head's 320x576 by 576x49152), torch's own threads, median of 5 after a
    warm-up, the two dtypes in turn; detail.best_gflops: the fastest repeat, the peak this shared machine
    reached (train_mfu's denominator). value: bf16 GFLOP/s at the MLP shape; ratio = bf16 / fp32 there."""
    import torch

    from tasks.common.models import cpu_has_bf16

    rates, best = {}, {}
    for shape_name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        contenders = {
            name: repeated_product(a.to(dtype), b.to(dtype), products)
            for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))
        }
        runs = time_runs(contenders, repeats)
        flops = 2 * m * k * n * products
        rates[shape_name] = {name: round(flops / r.median / 1e9, 1) for name, r in runs.items()}
        best[shape_name] = {name: round(flops / min(r.seconds) / 1e9, 1) for name, r in runs.items()}
    mlp = rates["mlp_up"]
    return {
        "value": mlp["bf16"],
        "unit": "GFLOP/s",
        "ratio": round(mlp["bf16"] / mlp["fp32"], 2),
        "detail": {
            "gflops": rates,
            "best_gflops": best,
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
    trainer in fp32: the real SmolLM2-135M, the default profile's LoRA and packed 4x320 batches; the two
    run in turn, the other first on odd repeats, each from a fresh model, warm-up steps dropped; value:
    bf16 tokens/s; ratio = bf16 / fp32, the median of 3 per-repeat ratios (goal >= 2)."""
    from datasets import Dataset

    from tasks.common.models import cpu_has_bf16

    cfg = train_config(WARMUP + STEPS)
    contenders = {p: cfg.model_copy(update={"precision": p}) for p in ("bf16", "fp32")}
    runs: dict[str, list[Timings]] = {p: [] for p in contenders}
    with tempfile.TemporaryDirectory() as tmp, stored_base_model() as base:
        train = Dataset.from_list(packed_rows(BATCH * (WARMUP + STEPS)))
        for repeat in range(REAL_REPEATS):
            for precision in list(contenders)[:: -1 if repeat % 2 else 1]:
                trainer = our_trainer(base, train, contenders[precision], Path(tmp) / f"{precision}{repeat}")
                timings = Timings()
                trainer.add_callback(stamping_callback(timings))
                trainer.train()
                runs[precision].append(timings)
    result = summary(runs, "bf16", "fp32", BATCH * LENGTH, cfg)
    result["detail"].update(
        model=REAL_MODEL,
        repeats=REAL_REPEATS,
        cpu_bf16=cpu_has_bf16(),
        order="one after the other, fp32 first on odd repeats",
    )
    return result


def cpu_attention_formulas() -> dict:
    """torch's flop counter knows the CUDA attention kernels (flash, efficient, cudnn) but not the CPU's
    flash kernel, which sdpa runs here: count it with the same formulas (every query against every key,
    as the kernel computes them under the packed rows' block mask)."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *args, **kwargs: (
            flop_counter.sdpa_flop_count(q, k, v)
        ),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda grad, q, k, v, *args, **kwargs: (
            flop_counter.sdpa_backward_flop_count(grad, q, k, v)
        ),
    }


def counting_callback(counted: dict):
    """Counts the FLOPs torch executes in the first step (forward, backward, optimizer: every matmul and
    attention kernel torch.utils.flop_counter knows, and the CPU attention kernel), which the timing drops
    as warm-up."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import TrainerCallback

    class Count(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.mode = FlopCounterMode(display=False, custom_mapping=cpu_attention_formulas())
                self.mode.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.mode.__exit__(None, None, None)
                counted["flops"] = self.mode.get_total_flops()
                counted["by_op"] = {str(k): v for k, v in self.mode.get_flop_counts()["Global"].items()}

    return Count()


def matmul_flops(by_op: dict) -> int:
    return sum(v for op, v in by_op.items() if "attention" not in op)


def labeled_share(rows) -> float:
    labels = [label for row in rows["labels"] for label in row]
    return sum(label != -100 for label in labels) / len(labels)


@benchmark("train_mfu")
def train_mfu() -> dict:
    """Model FLOPs utilisation of training: the FLOP/s of the train stage's trainer (real SmolLM2-135M,
    the default profile's LoRA, packed 4x320 batches, train.precision auto) over the machine's matmul rate
    in that precision at the model's MLP shape, the fastest repeat of matmul_peak's measurement before and
    after the training runs (this shared machine's speed moves within minutes: the best it reached is the
    honest peak). FLOPs per step are those torch
    executes (torch.utils.flop_counter over one whole step: forward, backward through the frozen layers,
    LoRA weight gradients, attention, the LM head at the labeled positions it runs on), not the 6 x
    parameters x tokens estimate, which counts weight gradients a frozen base never computes and an LM
    head over every position (it is in detail beside ours). Median step time of 3 fresh runs after 2
    warm-up steps. value: MFU (goal >= 0.35)."""
    import statistics

    from datasets import Dataset

    from tasks.common.models import cpu_has_bf16
    from tasks.training.model import resolved

    peaks = [matmul_peak()["detail"]["best_gflops"]]
    cfg = resolved(train_config(WARMUP + STEPS), "cpu")  # auto, as the train stage resolves it
    counted: dict = {}
    steps, estimates = [], []
    with tempfile.TemporaryDirectory() as tmp, stored_base_model() as base:
        train = Dataset.from_list(packed_rows(BATCH * (WARMUP + STEPS)))
        for repeat in range(REAL_REPEATS):
            trainer = our_trainer(base, train, cfg, Path(tmp) / f"run{repeat}")
            timings = Timings()
            trainer.add_callback(stamping_callback(timings))
            if repeat == 0:
                trainer.add_callback(counting_callback(counted))
            trainer.train()
            steps.append(statistics.median(timings.step[WARMUP:]))
            estimates.append(trainer.state.total_flos / trainer.state.global_step)
            precision = "bf16" if trainer.args.bf16 else "fp32"
    peaks.append(matmul_peak()["detail"]["best_gflops"])
    step_s = statistics.median(steps)
    achieved = counted["flops"] / step_s / 1e9
    denominator = max(p["mlp_up"][precision] for p in peaks)
    return {
        "value": round(achieved / denominator, 3),
        "unit": "MFU",
        "detail": {
            "achieved_gflops": round(achieved, 1),
            "peak_gflops_before_after": [p["mlp_up"] for p in peaks],
            "denominator": f"the best matmul_peak {precision} rate at the MLP shape, this run",
            "precision": precision,
            "flops_per_step": counted["flops"],
            "flops_by_op": counted["by_op"],
            "mfu_matmuls_only": round(matmul_flops(counted["by_op"]) / step_s / 1e9 / denominator, 3),
            "labeled_positions": round(labeled_share(train), 3),
            "estimate_6nt_gflops": round(statistics.median(estimates) / step_s / 1e9, 1),
            "step_s": round(step_s, 3),
            "step_s_per_run": [round(s, 3) for s in steps],
            "tokens_per_s": round(BATCH * LENGTH / step_s, 1),
            "model": REAL_MODEL,
            "lora": f"r={cfg.lora.r} alpha={cfg.lora.alpha} dropout={cfg.lora.dropout}",
            "batch": f"{BATCH}x{LENGTH} packed",
            "cpu_bf16": cpu_has_bf16(),
            "goal": ">= 0.35",
        },
    }
