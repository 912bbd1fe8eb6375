"""Stage train: supervised fine-tuning with TRL's SFTTrainer; LoRA, QLoRA or full fine-tuning.

Output: `model/` (the adapter, or the full weights, plus the tokenizer and the prompt template),
`merged/` (an adapter merged into its base after a logit-equivalence check: tasks/training/merge.py),
`log_history.json`, `loss.png`; manifest outputs `model_dir` (full weights: `merged/` or `model/`),
`adapter_dir` (the adapter alone, for LoRA and QLoRA) and `adapter` (false: `model_dir` is never an adapter).

Run alone: `finetune run --config pipeline_config/offline.yaml --only train`.
"""

from __future__ import annotations

import shutil

from tasks.common.io import hash_path
from tasks.common.models import gpu_resource, pick_device, resolve_attention
from tasks.common.stage import StageContext, StageResult, StageSpec
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.job import TrainJob
from tasks.training.launch import accelerate_config_file, train_in_processes
from tasks.training.merge import check_inputs, merge_adapter
from tasks.training.model import resolved
from tasks.training.recipe import train_model


def run(cfg, inputs, out_dir, context: StageContext) -> StageResult:
    device = pick_device(cfg.train.device)
    train_cfg = resolved(cfg.train, device)  # the merge stores the weights in the precision trained in
    job = TrainJob(
        dataset_dir=inputs["tokenize"].file("dataset_dir"),
        out_dir=out_dir,
        model_path=inputs["base_model"].file("model_dir"),
        template_file=inputs["tokenize"].file("template"),
        cfg=train_cfg,
        seed=cfg.seed,
        trust_remote_code=cfg.model.trust_remote_code,
        resume_dir=context.resume_dir,
    )
    # train.num_processes > 1: DDP under accelerate launch; rank 0 writes (tasks/training/launch.py)
    report = train_in_processes(job) if cfg.train.num_processes > 1 else train_model(job)
    if cfg.train.method == "full":
        return StageResult(report, {"model_dir": "model", "adapter": False})
    # evaluation, registration and serving read the merged weights: what is scored is what is exported
    report["merge"] = merge_adapter(
        job.model_path,
        out_dir / "model",
        out_dir / "merged",
        train_cfg,
        check_inputs(job.dataset_dir),
        device,
        cfg.model.trust_remote_code,
    )
    shutil.copyfile(job.template_file, out_dir / "merged" / TEMPLATE_FILE)
    return StageResult(report, {"model_dir": "merged", "adapter": False, "adapter_dir": "model"})


def environment(cfg) -> dict:
    """What shapes the training beyond the config: the device, the precision and attention kernel "auto"
    resolves to on it (bf16 here, fp32 on a CPU without it; FlashAttention-2 where it is installed), whether
    train.compile auto compiles there (a C++ compiler on the CPU), and an
    accelerate config file's content (FSDP, DeepSpeed)."""
    device = pick_device(cfg.train.device)
    train = resolved(cfg.train, device)
    attention = resolve_attention(train.attn_implementation, device, train.precision) or "default"
    found = {
        "device": device,
        "precision": train.precision,
        "attn_implementation": attention,
        "compile": train.compile,
    }
    path = accelerate_config_file(cfg.train)
    return found | ({"accelerate_config": hash_path(path)} if path else {})


SPEC = StageSpec(
    "train",
    run,
    "tasks.training",
    sections=("train", "seed"),
    libraries=(
        "torch",
        "transformers",
        "tokenizers",
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "datasets",
    ),
    environment=environment,
    resources=lambda cfg: gpu_resource(cfg.train.device),
)
