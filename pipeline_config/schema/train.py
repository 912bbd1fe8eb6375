"""`train`: the method (LoRA, QLoRA, full fine-tuning) and the trainer's settings. Scheduler and optimizer
names are transformers' own, written out so that loading a config does not import transformers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import Precision, Section, one_of


class LoraSection(Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class QuantizationSection(Section):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "float16", "bfloat16"] = "float16"


# transformers' SchedulerType and OptimizerNames values, written out so that loading a config does not import
# transformers (seconds); tests/pipeline_config/test_train.py fails when an upgrade changes either enum.
SCHEDULER_TYPES = frozenset(
    {
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
        "warmup_stable_decay", "greedy",
    }
)  # fmt: skip
OPTIMIZER_NAMES = frozenset(
    {
        "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
        "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
        "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
        "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
        "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw",
        "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
        "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
        "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
    }
)  # fmt: skip
# Values transformers accepts only with arguments the training stage does not pass: they would fail in train.
_NEEDS_UNEXPOSED_ARGS = {
    "cosine_with_min_lr": "lr_scheduler_kwargs (min_lr)",
    "cosine_warmup_with_min_lr": "lr_scheduler_kwargs (min_lr)",
    **{name: "optim_target_modules" for name in OPTIMIZER_NAMES if name.startswith(("galore_", "apollo_"))},
}


class TrainConfig(Section):
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraSection | None = LoraSection()
    quantization: QuantizationSection | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"  # on the CPU, bf16 autocasts over fp32 weights
    # auto: FlashAttention-2 on CUDA in bf16/fp16 when flash-attn is installed (packed batches flattened,
    # padding-free), else transformers' default (sdpa); or name one (tasks/common/models.py resolve_attention)
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2", "flex_attention"] = "auto"
    # torch.compile each repeated block of the model (its decoder layers: regional compilation, one compile
    # serves every layer) once the adapter is in place. On this 2-core CPU a bf16 SmolLM2-135M step went
    # from 4.4 to 3.3 s after a 36 s first step: it pays past ~30 steps. Needs a C++ compiler on the CPU
    # (inductor); not with qlora (bitsandbytes' 4-bit layers). auto: compile where it can run (CUDA, or a CPU
    # with g++/clang++ on PATH; the project's slim Docker image has none) and not with qlora
    compile: bool | Literal["auto"] = False
    learning_rate: float = Field(2e-4, gt=0)
    num_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0)
    # a checkpoint every save_steps in the stage's resume folder: a killed run resumes from the last one
    save_steps: int | None = Field(None, gt=0)
    load_best_model_at_end: bool = (
        False  # the checkpoint with the lowest eval loss (the pythia-70m Q&A tutorial)
    )
    early_stopping_patience: int | None = Field(None, gt=0)  # evaluations without improvement
    # > 1: data-parallel training in that many processes through `accelerate launch` (DDP; one per GPU, or
    # gloo on the CPU: tasks/training/launch.py). batch_size stays the GLOBAL batch of a step: each process
    # takes batch_size / num_processes rows of it, so 1 and N processes train on the same batches
    num_processes: int = Field(1, ge=1)
    # an accelerate config file (FSDP, DeepSpeed: pipeline_config/accelerate/), passed as --config_file
    accelerate_config: str | None = None
    # an adapter is merged into full weights only if the merged model's logits stay within this of the
    # unmerged adapter's on a few held-out prompts (float32 on both sides: the check measures the merge)
    merge_tolerance: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _compile_where_it_runs(self) -> TrainConfig:
        if self.compile is True and self.method == "qlora":
            raise ValueError(
                "train.compile does not run with train.method qlora (bitsandbytes' 4-bit layers)"
            )
        return self

    @model_validator(mode="after")
    def _checkpoints_for_best(self) -> TrainConfig:
        if (self.load_best_model_at_end or self.early_stopping_patience) and not self.eval_steps:
            raise ValueError(
                "train.load_best_model_at_end and train.early_stopping_patience need train.eval_steps"
            )
        if self.load_best_model_at_end and (not self.save_steps or self.save_steps % self.eval_steps):
            raise ValueError(
                "train.load_best_model_at_end needs train.save_steps, a multiple of train.eval_steps "
                f"(got save_steps {self.save_steps}, eval_steps {self.eval_steps})"
            )
        return self

    @model_validator(mode="after")
    def _processes_share_batches(self) -> TrainConfig:
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.num_processes "
                f"({self.num_processes}): each process takes an equal share of every batch"
            )
        if self.accelerate_config and self.num_processes == 1:
            raise ValueError("train.accelerate_config is used only with train.num_processes > 1")
        return self

    @model_validator(mode="after")
    def _method_needs(self) -> TrainConfig:
        if self.method in ("lora", "qlora") and self.lora is None:
            raise ValueError(f"train.method '{self.method}' needs a train.lora section")
        if self.method == "qlora" and self.quantization is None:
            raise ValueError("train.method 'qlora' needs a train.quantization section")
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError(f"train.quantization is only used by method 'qlora' (got '{self.method}')")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"train.max_steps must be -1 (use num_epochs) or > 0 (got {self.max_steps})")
        if self.lr_scheduler == "reduce_lr_on_plateau" and self.eval_steps is None:
            raise ValueError(
                "train.lr_scheduler 'reduce_lr_on_plateau' needs train.eval_steps (it steps on eval loss)"
            )
        for key in ("lr_scheduler", "optim"):
            value = getattr(self, key)
            if value in _NEEDS_UNEXPOSED_ARGS:
                raise ValueError(
                    f"train.{key} '{value}' needs transformers' {_NEEDS_UNEXPOSED_ARGS[value]}, which the "
                    "training stage does not pass"
                )
        return self

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return one_of(
            value, sorted(SCHEDULER_TYPES), "train.lr_scheduler", "a transformers SchedulerType value"
        )

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return one_of(value, sorted(OPTIMIZER_NAMES), "train.optim", "a transformers OptimizerNames value")
