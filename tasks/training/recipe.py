"""Supervised fine-tuning with TRL's SFTTrainer; LoRA, QLoRA or full fine-tuning.

Reads top to bottom like a recipe: pick the device, load the model (tasks/training/model.py: the
quantization and LoRA configs), load the tokenized splits, build the trainer, train, save. LoRA vs QLoRA
vs full is the `train.method` switch. Output: `model/` (the adapter, or the full weights, plus the
tokenizer), `log_history.json` and the loss curve in report.json. A training resumed from a checkpoint
reports its loss and time over all its steps, and the step it resumed from (tasks/training/resume.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline_config.schema import TrainConfig
from tasks.common.models import load_tokenizer, pick_device, takes_position_mask
from tasks.common.progress import Progress
from tasks.common.runtime import logger
from tasks.common.templates import TEMPLATE_FILE
from tasks.tokenization.encode import TOKENIZER_DIR
from tasks.training.collate import PackedCollator, needs_flat_batches
from tasks.training.job import TrainJob
from tasks.training.loss import LabeledPositionsLoss
from tasks.training.memory import out_of_memory_advice, peak_memory_mb, reset_peak_memory
from tasks.training.model import compile_blocks, embedding_modules, load_model, lora_config, resolved
from tasks.training.plots import plot_losses
from tasks.training.resume import (
    checkpoint_clock,
    checkpoint_step,
    earlier_part,
    last_checkpoint,
    whole_training,
)


def training_args(cfg: TrainConfig, out_dir: Path, device: str, seed: int, has_eval: bool):
    from trl import SFTConfig

    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps in transformers 5
        weight_decay=cfg.weight_decay,
        optim=cfg.optim,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name: no FutureWarning
        bf16=cfg.precision == "bf16",  # resolved (resolve_precision): on the CPU, autocast over fp32 weights
        fp16=device == "cuda" and cfg.precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_pin_memory=device == "cuda",  # nothing to pin for on the CPU (torch warns, then skips it)
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps,
        # checkpoints only to resume a killed run (and to pick the best): the stage saves the final model
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=2,  # the latest and, with load_best_model_at_end, the best
        load_best_model_at_end=cfg.load_best_model_at_end and has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to="none",  # the flow logs one MLflow run per pipeline run
        include_num_input_tokens_seen="non_padding",  # tokens seen, logged with the loss and in the report
        seed=seed,
        data_seed=seed,
        max_length=None,  # rows were truncated/packed by the tokenize stage
        dataset_num_proc=None,
        disable_tqdm=True,
    )
    check_optimizer(args, device)
    return args


def check_optimizer(args, device: str) -> None:
    """train.optim must run on this device, checked before training: transformers would fail only at the
    first step, with an error that does not name the config key. One step on a probe tensor catches a
    missing package (torchao, schedulefree, ...) and a device without the kernels."""
    import warnings

    import torch
    from transformers import Trainer

    name = args.optim.value if hasattr(args.optim, "value") else str(args.optim)
    try:
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
        probe = torch.nn.Parameter(torch.zeros(4096, device=device))  # 4096: bitsandbytes' 8-bit minimum
        probe.grad = torch.ones_like(probe)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimizer_cls([probe], **kwargs).step()
    except Exception as error:  # re-raised with the key to change; the cause stays chained
        raise ValueError(
            f"train.optim '{name}' cannot run on {device} here ({type(error).__name__}: {error}); "
            "choose another train.optim, e.g. adamw_torch or adafactor"
        ) from error
    if device == "cpu" and name.startswith("paged_"):
        # bitsandbytes keeps the 8-bit (or 32-bit) states; paging only moves them out of GPU memory
        logger().info("train.optim '%s' on the CPU: bitsandbytes runs it without paging", name)
    for warning in caught:
        if "Paged optimizers are not supported on CPU" not in str(warning.message):
            logger().info("train.optim '%s': %s", name, warning.message)


SHOWN_LOGS = ("loss", "eval_loss", "grad_norm", "learning_rate", "epoch")
# A record with `detail` set goes to the Prefect UI and the run's log file, not the terminal (flows/quiet.py):
# there the progress bar says how far training is, and the end-of-run table what it reached.
DETAIL = {"detail": True}


def route_logs_to_logger(trainer) -> None:
    """Send the trainer's log lines to the (Prefect) logger instead of print(): stdout stays the CLI's."""
    from transformers import PrinterCallback, TrainerCallback

    class LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if "train_loss" in (logs or {}):  # the trainer's last line: this call's steps only (train_model)
                return
            # the numbers a person watches; the rest (entropy, token counts) is in log_history.json
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in SHOWN_LOGS}
            logger().info("step %d/%d %s", state.global_step, state.max_steps, shown, extra=DETAIL)

    class ProgressCallback(TrainerCallback):
        """A bar with an ETA on the terminal and a Prefect progress artifact, per optimizer step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.progress = Progress(state.max_steps, "train", key="train-progress", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            self.progress.update(state.global_step - self.progress.done)

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.close()

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogCallback())
    trainer.add_callback(ProgressCallback())


def add_early_stopping(trainer, cfg: TrainConfig) -> None:
    if cfg.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))


def loss_only_sft_trainer():
    """TRL's SFTTrainer computing only the loss, as transformers' Trainer does.

    TRL 1.16's compute_loss runs a chunked "fused" LM head that also yields entropy and top-1 accuracy for
    the logs; off Triton it scores every position, folds each logit tile in several extra passes, and
    computes every tile again in the backward. Profiled on the CPU (SmolLM2's vocabulary of 49,152, batch
    4x320, 2 layers) that head took ~80% of a step and the trainer ran at 0.33-0.55x a plain loop; with
    this class ~1.0x (benchmarks/train_bench.py train_throughput). Trainer.compute_loss calls the model
    with its labels and `num_items_in_batch` (the label tokens of the whole accumulated batch, so the
    micro-batches' losses sum to the big batch's mean) and scales by the process count under DDP, as TRL's
    own loss did. Lost: the entropy / mean_token_accuracy / num_tokens log lines (num_input_tokens_seen
    stays). In training the LM head runs only at labeled positions (tasks/training/loss.py)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class LossOnlySFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # as TRL: no KV cache (with one, transformers would not build the packed rows' block mask)
            inputs = {**inputs, "use_cache": False}
            if not return_outputs and "labels" in inputs and takes_position_mask(model):
                model = LabeledPositionsLoss(model)  # the same loss, the LM head only where a label is
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return LossOnlySFTTrainer


def build_trainer(
    model,
    tokenizer,
    train,
    test,
    cfg: TrainConfig,
    out_dir: Path,
    device: str,
    seed: int,
    modules_to_save: list[str] | None = None,
):
    """The trainer the train stage runs (benchmarks/train_bench.py times this same one). Packed rows
    (example boundaries in `seq_lengths`) go through our collator, which turns them into position ids."""
    packed = "seq_lengths" in train.column_names
    trainer = loss_only_sft_trainer()(
        model=model,
        args=training_args(cfg, out_dir, device, seed, has_eval=len(test) > 0),
        train_dataset=train,
        eval_dataset=test if cfg.eval_steps else None,
        processing_class=tokenizer,
        data_collator=PackedCollator(tokenizer.pad_token_id, needs_flat_batches(model)) if packed else None,
        peft_config=lora_config(cfg, modules_to_save),
    )
    route_logs_to_logger(trainer)
    add_early_stopping(trainer, cfg)
    if resolved(cfg, device).compile:  # after the trainer put the adapter in: its layers compile too
        trainer.compiled_blocks = compile_blocks(trainer.model, device)
    return trainer


def train_model(job: TrainJob) -> dict:
    """Fine-tune; the tokenize stage's prompt template is stored with the model.

    Checkpoints (every `train.save_steps`) go to `job.resume_dir`, which outlives a killed attempt: the
    next attempt resumes from the last one, with the optimizer, scheduler, RNG and data order restored."""
    import torch
    from datasets import load_from_disk
    from transformers import set_seed

    out_dir, model_path = job.out_dir, job.model_path
    set_seed(job.seed)
    device = pick_device(job.cfg.device)
    cfg = resolved(job.cfg, device)
    # the tokenizer the dataset's ids are in: the base's, plus any FIM sentinels tokenize had to add
    tokenizer_dir = job.dataset_dir / TOKENIZER_DIR
    tokenizer = load_tokenizer(tokenizer_dir if tokenizer_dir.is_dir() else model_path)
    added = len(tokenizer) - len(load_tokenizer(model_path))
    model = load_model(model_path, cfg, device, job.trust_remote_code, len(tokenizer) if added else None)
    splits = load_from_disk(str(job.dataset_dir))
    # packed rows: example boundaries in seq_lengths, turned into position ids by the collator
    packed = "seq_lengths" in splits["train"].column_names
    train = splits["train"].select_columns(
        ["input_ids", "labels", "seq_lengths" if packed else "attention_mask"]
    )
    test = splits["test"].select_columns(["input_ids", "attention_mask", "labels"])
    extra = embedding_modules(model) if added else None  # the rows of added tokens must train
    checkpoints_in = job.resume_dir or out_dir
    trainer = build_trainer(model, tokenizer, train, test, cfg, checkpoints_in, device, job.seed, extra)
    checkpoint = last_checkpoint(job.resume_dir)
    earlier = earlier_part(checkpoint)
    if earlier:
        logger().info("resuming training from step %d (%s)", earlier.step, checkpoint)
    trainer.add_callback(checkpoint_clock(earlier.runtime_s if earlier else 0.0))
    reset_peak_memory(device)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except torch.OutOfMemoryError as error:
        raise torch.OutOfMemoryError(out_of_memory_advice(cfg, str(error))) from error
    # on every rank: under FSDP or DeepSpeed ZeRO-3 gathering the full weights is a collective; rank 0
    # writes them and the tokenizer (the trainer's processing_class)
    trainer.save_model(str(out_dir / "model"))
    if not trainer.is_world_process_zero():
        return {}  # the other ranks of a multi-process run (tasks/training/launch.py)
    (out_dir / "model" / "training_args.bin").unlink(missing_ok=True)  # a pickle; the config says it all
    shutil.copyfile(job.template_file, out_dir / "model" / TEMPLATE_FILE)
    trainer_state = trainer.state
    history = trainer_state.log_history
    # the trainer's own numbers cover the steps of this call; a resumed training reports all its steps
    train_loss, runtime = whole_training(
        earlier, result.global_step, result.training_loss, result.metrics.get("train_runtime")
    )
    if history and "train_loss" in history[-1]:  # the trainer's last entry, from this call alone
        history[-1] |= {"train_loss": train_loss, "train_runtime": runtime}
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    plot_losses(history, out_dir / "loss.png")
    losses = [h["loss"] for h in history if "loss" in h]
    quarter = max(len(losses) // 4, 1)  # a batch's loss is noisy: the first and the last quarter, averaged
    logger().info(
        "trained %d steps%s: train loss %.4f, %.1f s",
        result.global_step,
        f" (resumed from step {earlier.step})" if earlier else "",
        train_loss,
        runtime or 0.0,
        extra=DETAIL,
    )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    # a 4-bit weight stores two values per byte: count its real (unpacked) size from its quant_state
    total = sum(
        p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else p.numel()
        for p in trainer.model.parameters()
    )
    attention = getattr(model.config, "_attn_implementation", None)
    compiled = getattr(trainer, "compiled_blocks", 0)
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "rows_in": len(train),
        "rows_out": 1,
        "method": cfg.method,
        "device": device,
        "precision": cfg.precision,  # the compute precision the run used (resolve_precision)
        "attn_implementation": attention,
        "compiled_blocks": compiled,  # train.compile: blocks torch.compile'd (0: eager)
        "base_model": str(model_path),
        "adapter": cfg.method != "full",
        "steps": result.global_step,
        "resumed_from_step": checkpoint_step(checkpoint),
        "train_loss": train_loss,  # the mean over every step, resumed or not
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "mean_loss_first_quarter": sum(losses[:quarter]) / quarter if losses else None,
        "mean_loss_last_quarter": sum(losses[-quarter:]) / quarter if losses else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_runtime_s": runtime,  # every attempt's training time, as train_loss
        "tokens_seen": trainer_state.num_input_tokens_seen,  # real (non-padding) input tokens
        "total_flos": trainer_state.total_flos,  # transformers' estimate: 6 x parameters x tokens
        "peak_memory_mb": peak_memory_mb(device),
        # with train.load_best_model_at_end the saved model is this checkpoint's, not the last step's
        "best_eval_loss": trainer_state.best_metric,
        "best_step": checkpoint_step(trainer_state.best_model_checkpoint),
        "stopped_early": cfg.early_stopping_patience is not None
        and result.global_step < trainer_state.max_steps,
    }
