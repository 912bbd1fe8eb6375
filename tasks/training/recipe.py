"""Supervised fine-tuning with TRL's SFTTrainer; LoRA, QLoRA or full fine-tuning.

Reads top to bottom like a recipe: pick the device, build the quantization config, build the LoRA config,
load the model, load the tokenized splits, build the trainer, train, save. LoRA vs QLoRA vs full is the
`train.method` switch. Output: `model/` (the adapter, or the full weights, plus the tokenizer),
`log_history.json` and the loss curve in report.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline_config.schema import TrainConfig
from tasks.common.models import load_causal_lm, load_tokenizer, pick_device
from tasks.common.prefect import logger
from tasks.common.progress import Progress
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.plots import plot_losses


def quantization_config(cfg: TrainConfig):
    if cfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    q = cfg.quantization
    if q.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
    )


def lora_config(cfg: TrainConfig):
    if cfg.method == "full":
        return None
    from peft import LoraConfig

    lora = cfg.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_model(model_path: str, cfg: TrainConfig, device: str, trust_remote_code: bool):
    quant = quantization_config(cfg)
    model = load_causal_lm(model_path, device, cfg.precision, quant, trust_remote_code)
    if quant:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def training_args(cfg: TrainConfig, out_dir: Path, device: str, seed: int, has_eval: bool):
    from trl import SFTConfig

    return SFTConfig(
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
        bf16=device == "cuda" and cfg.precision == "bf16",
        fp16=device == "cuda" and cfg.precision == "fp16",
        use_cpu=device == "cpu",
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="no",  # the stage saves the final model itself; checkpoints are not kept
        report_to="none",  # the flow logs one MLflow run per pipeline run
        seed=seed,
        data_seed=seed,
        max_length=None,  # rows were truncated/packed by the tokenize stage
        dataset_num_proc=None,
        disable_tqdm=True,
    )


SHOWN_LOGS = ("loss", "eval_loss", "grad_norm", "learning_rate", "epoch", "train_loss", "train_runtime")


def route_logs_to_logger(trainer) -> None:
    """Send the trainer's log lines to the (Prefect) logger instead of print(): stdout stays the CLI's."""
    from transformers import PrinterCallback, TrainerCallback

    class LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            # the numbers a person watches; the rest (entropy, token counts) is in log_history.json
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in SHOWN_LOGS}
            logger().info("step %d/%d %s", state.global_step, state.max_steps, shown)

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


def train_model(
    dataset_dir: Path,
    out_dir: Path,
    model_path: str,
    template_file: Path,
    cfg: TrainConfig,
    seed: int,
    trust_remote_code: bool = False,
) -> dict:
    """Fine-tune; `template_file` (the tokenize stage's prompt template) is stored with the model."""
    import torch
    from datasets import load_from_disk
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(seed)
    device = pick_device(cfg.device)
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, cfg, device, trust_remote_code)
    splits = load_from_disk(str(dataset_dir))
    columns = ["input_ids", "attention_mask", "labels"]
    train = splits["train"].select_columns(columns)
    test = splits["test"].select_columns(columns)
    trainer = SFTTrainer(
        model=model,
        args=training_args(cfg, out_dir, device, seed, has_eval=len(test) > 0),
        train_dataset=train,
        eval_dataset=test if cfg.eval_steps else None,
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
    )
    route_logs_to_logger(trainer)
    result = trainer.train()
    trainer.model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    shutil.copyfile(template_file, out_dir / "model" / TEMPLATE_FILE)
    history = trainer.state.log_history
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    plot_losses(history, out_dir / "loss.png")
    losses = [h["loss"] for h in history if "loss" in h]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    # a 4-bit weight stores two values per byte: count its real (unpacked) size from its quant_state
    total = sum(
        p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else p.numel()
        for p in trainer.model.parameters()
    )
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "rows_in": len(train),
        "rows_out": 1,
        "method": cfg.method,
        "device": device,
        "base_model": str(model_path),
        "adapter": cfg.method != "full",
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_runtime_s": result.metrics.get("train_runtime"),
    }
