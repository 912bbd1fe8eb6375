"""train_throughput and packed_layout (each described in its docstring): training speed on the CPU, measured
side by side. The plain loop takes the batches our trainer's dataloader yields, collated once up front (so
the trainer's collation counts against it, the loop's does not).

Model: SmolLM2-135M's shape (hidden 576, 9 heads, 3 KV heads, MLP 1536, vocabulary 49,152, tied embeddings)
with 2 layers instead of 30 and random weights: the vocabulary is where TRL's per-step metrics cost, and 2
layers keep a step to a few seconds. Data: random tokens packed into full 320-token blocks (the default
profile's tokenize.max_length) of 3-5 examples each, labels -100 on each example's first 43% of tokens (its
prompt, as loss masking leaves it; the default profile's share), batch 4 (the default profile's
train.batch_size); LoRA and optimizer settings from pipeline_config/offline.yaml. The plain loop calls the
model with its labels (an LM head over every position); ours runs the head at labeled positions only.

Timing: a TrainerCallback stamps on_step_begin / on_step_end; `cycle` is the time from one step's end to
the next (data loading, collation and logging included) and is what the ratio uses, `step` is begin to end.
The two sides run in lockstep, one step each in turn (this machine is shared and its load changes within
seconds, so back-to-back runs of each side measured the neighbours more than the code): the same callback
runs one plain step between two of ours, and that time is subtracted from our cycle. Each repeat starts
both sides from fresh models, alternating which side steps first; the first WARMUP steps of each are
dropped, and the ratio is the median of the per-repeat ratios.

Run alone: `python -m benchmarks.run train_throughput packed_layout`.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.registry import benchmark

LAYERS, BATCH, LENGTH = 2, 4, 320
WARMUP, STEPS, REPEATS = 2, 6, 4
PROFILE = "pipeline_config/offline.yaml"


def smollm2_shaped(layers: int = LAYERS):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def save_base(folder: Path, layers: int = LAYERS) -> Path:
    """Random weights (seeded) and a small byte-level tokenizer (only its pad id is used) in one folder."""
    import torch
    from transformers import LlamaForCausalLM

    from tasks.base_model.scratch import train_tokenizer

    torch.manual_seed(0)
    LlamaForCausalLM(smollm2_shaped(layers)).save_pretrained(folder)
    train_tokenizer(["def f(x):\n    return x\n"] * 20, 300).save_pretrained(folder)
    return folder


# the share of an example's tokens before its labels: 43% of the default profile's packed train positions
# carry no label (the instruction under loss masking, each example's first token), measured 2026-12-07
PROMPT_SHARE = 0.43


def packed_rows(count: int, length: int = LENGTH, vocab: int = 49152, seed: int = 0) -> list[dict]:
    """Full blocks of 3-5 examples each, as tasks/tokenization/packing.py writes them (no padding), each
    example's first PROMPT_SHARE of tokens unlabeled, as loss masking leaves its prompt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        cuts = sorted(rng.sample(range(16, length - 16), rng.randint(2, 4)))
        lengths = [b - a for a, b in zip([0, *cuts], [*cuts, length], strict=True)]
        ids = [rng.randrange(10, vocab) for _ in range(length)]
        labels = list(ids)
        start = 0
        for n in lengths:
            # the prompt, and so the first token: nothing is predicted across a boundary
            labels[start : start + max(1, int(n * PROMPT_SHARE))] = [-100] * max(1, int(n * PROMPT_SHARE))
            start += n
        rows.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
    return rows


def train_config(steps: int):
    from pipeline_config import load_config

    train = load_config(PROFILE).train
    return train.model_copy(
        update={"device": "cpu", "max_steps": steps, "batch_size": BATCH, "save_steps": None}
    )


class Timings:
    """Per-step wall times: `step` from begin to end; `cycle` from one step's end to the next (what runs
    between steps included) less the time `exclude`d meanwhile (the other side's interleaved step)."""

    def __init__(self) -> None:
        self.step: list[float] = []
        self.cycle: list[float] = []
        self.begun = self.ended = time.perf_counter()
        self.excluded = 0.0

    def begin(self, new_cycle: bool = False) -> None:
        self.begun = time.perf_counter()
        if new_cycle:  # nothing of this side runs between its steps: its cycle is the step
            self.ended = self.begun

    def end(self) -> float:
        now = time.perf_counter()
        self.step.append(now - self.begun)
        self.cycle.append(now - self.ended - self.excluded)
        self.ended, self.excluded = now, 0.0
        return self.step[-1]

    def exclude(self, seconds: float) -> None:
        self.excluded += seconds

    def tokens_per_s(self, tokens_per_step: int, kind: str = "cycle") -> float:
        kept = getattr(self, kind)[WARMUP:]
        return tokens_per_step * len(kept) / sum(kept)


class PlainLoop:
    """A textbook loop, one step per call: forward with labels (autocast in the trainer's bf16), backward,
    clip, AdamW step, scheduler step, zero grads. The optimizer class and its arguments, the schedule and
    the clipping norm are the trainer's own (transformers' Trainer.get_optimizer_cls_and_kwargs on our
    training_args).

    `args`: built once up front; a new TrainingArguments resets accelerate's state under a built trainer."""

    def __init__(self, model, batches: list[dict], args) -> None:
        from transformers import Trainer, get_scheduler

        self.model, self.batches, self.max_grad_norm = model.train(), iter(batches), args.max_grad_norm
        self.bf16 = args.bf16  # the trainer's precision: autocast, as accelerate wraps its forward
        self.params = [p for p in model.parameters() if p.requires_grad]
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        self.optimizer = optimizer_cls([{"params": self.params, "weight_decay": args.weight_decay}], **kwargs)
        steps = len(batches)
        self.scheduler = get_scheduler(
            args.lr_scheduler_type, self.optimizer, args.get_warmup_steps(steps), steps
        )
        self.timings = Timings()

    def step(self) -> float:
        import torch

        self.timings.begin(new_cycle=True)
        batch = next(self.batches)  # collated up front
        # use_cache=False as the trainer: with a KV cache, transformers drops the packed-sequence mask
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.timings.end()


def plain_args(cfg, out_dir: Path):
    from tasks.training.recipe import training_args

    return training_args(cfg, out_dir, "cpu", 0, has_eval=False)


def interleaving_callback(ours: Timings, plain: PlainLoop, plain_first: bool):
    """Stamps our trainer's steps and runs one plain step between each two of ours: before our step
    begins (plain_first) or after it ends; either way outside our step and subtracted from our cycle."""
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ours.ended = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            if plain_first:
                ours.exclude(plain.step())
            ours.begin()

        def on_step_end(self, args, state, control, **kwargs):
            ours.end()
            if not plain_first:
                ours.exclude(plain.step())

    return Interleave()


def our_trainer(base: Path, train, cfg, out_dir: Path):
    from transformers import set_seed

    from tasks.common.models import load_tokenizer
    from tasks.training.model import load_model
    from tasks.training.recipe import build_trainer

    set_seed(0)
    model = load_model(str(base), cfg, "cpu", trust_remote_code=False)
    return build_trainer(model, load_tokenizer(base), train, train.select([]), cfg, out_dir, "cpu", 0)


def plain_model(base: Path, cfg):
    from peft import get_peft_model
    from transformers import set_seed

    from tasks.training.model import load_model, lora_config

    set_seed(0)
    return get_peft_model(load_model(str(base), cfg, "cpu", trust_remote_code=False), lora_config(cfg))


@benchmark("train_throughput")
def train_throughput() -> dict:
    """Training tokens/s of the train stage's trainer (recipe.py `build_trainer`) over a plain PyTorch loop
    on the same SmolLM2-shaped 2-layer model, LoRA, batches, AdamW, schedule and clipping: the two in
    lockstep (ours, plain, ours, plain, ...: this machine's load changes within seconds), plain first on odd
    repeats, each repeat from fresh models, warm-up steps dropped; value: our tokens/s; ratio = ours / plain,
    the median of 4 repeats (goal >= 0.95)."""
    from datasets import Dataset

    steps = WARMUP + STEPS
    cfg = train_config(steps)
    tokens = BATCH * LENGTH
    runs: dict[str, list[Timings]] = {"ours": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = save_base(Path(tmp) / "base")
        args = plain_args(cfg, Path(tmp))
        train = Dataset.from_list(packed_rows(BATCH * steps))
        # the batches our trainer's dataloader yields, in its (seeded) order: the plain loop's batches
        batches = [dict(b) for b in our_trainer(base, train, cfg, Path(tmp)).get_train_dataloader()]
        assert len(batches) == steps and all(b["input_ids"].numel() == tokens for b in batches)
        for repeat in range(REPEATS):
            trainer = our_trainer(base, train, cfg, Path(tmp) / f"ours{repeat}")
            plain, ours = PlainLoop(plain_model(base, cfg), batches, args), Timings()
            trainer.add_callback(interleaving_callback(ours, plain, plain_first=repeat % 2 == 1))
            trainer.train()
            runs["ours"].append(ours)
            runs["plain"].append(plain.timings)
    return summary(runs, "ours", "plain", tokens, cfg)


def summary(runs: dict, top: str, bottom: str, tokens: int, cfg) -> dict:
    import torch

    rates = {side: [t.tokens_per_s(tokens) for t in timings] for side, timings in runs.items()}
    step_rates = {side: [t.tokens_per_s(tokens, "step") for t in timings] for side, timings in runs.items()}
    ratios = [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]
    step_ratios = [a / b for a, b in zip(step_rates[top], step_rates[bottom], strict=True)]
    return {
        "value": round(statistics.median(rates[top]), 1),
        "unit": "tokens/s",
        "ratio": round(statistics.median(ratios), 3),
        "detail": {
            **{f"{side}_tokens_per_s": round(statistics.median(r), 1) for side, r in rates.items()},
            "ratios": [round(r, 3) for r in ratios],
            "step_only_ratio": round(statistics.median(step_ratios), 3),  # on_step_begin..end, no data/logs
            "model": f"Llama, SmolLM2-135M shape with {LAYERS} layers, random weights, vocab 49152",
            "lora": f"r={cfg.lora.r} alpha={cfg.lora.alpha} dropout={cfg.lora.dropout} "
            f"{cfg.lora.target_modules}",
            "batch": f"{BATCH}x{LENGTH} packed",
            "steps": STEPS,
            "warmup_steps": WARMUP,
            "repeats": REPEATS,
            "order": "lockstep, one step each in turn; the other side first on odd repeats",
            "torch_threads": torch.get_num_threads(),
        },
    }


@benchmark("packed_layout")
def packed_layout() -> dict:
    """Tokens/s of a training step on the same packed blocks, one flattened row vs per-row block-diagonal
    masks (tasks/training/collate.py) on CPU sdpa, through the same plain training step, in lockstep as
    train_throughput; the two layouts give the same loss (checked on the first batch). value: flattened
    tokens/s; ratio = flat / rows (> 1: flattened is faster)."""
    import torch

    from tasks.training.collate import PackedCollator

    steps = WARMUP + STEPS
    cfg = train_config(steps)
    rows = packed_rows(BATCH * steps, seed=1)
    layouts = {
        name: [PackedCollator(0, flatten)(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]
        for name, flatten in (("flat", True), ("rows", False))
    }
    runs: dict[str, list[Timings]] = {"flat": [], "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = save_base(Path(tmp) / "base")
        args = plain_args(cfg, Path(tmp))
        with torch.no_grad():
            model = plain_model(base, cfg).eval()
            losses = {name: model(**b[0], use_cache=False).loss.item() for name, b in layouts.items()}
            attention = model.config._attn_implementation
        for repeat in range(REPEATS):  # the two layouts in lockstep, flat first on even repeats
            loops = {side: PlainLoop(plain_model(base, cfg), layouts[side], args) for side in runs}
            order = ("flat", "rows") if repeat % 2 == 0 else ("rows", "flat")
            for _ in range(steps):
                for side in order:
                    loops[side].step()
            for side in runs:
                runs[side].append(loops[side].timings)
    result = summary(runs, "flat", "rows", BATCH * LENGTH, cfg)
    result["detail"].update(
        shapes={name: list(batches[0]["input_ids"].shape) for name, batches in layouts.items()},
        first_batch_loss={name: round(loss, 6) for name, loss in losses.items()},
        attention=f"{attention} (causal mask, block-diagonal from position_ids)",
    )
    return result
