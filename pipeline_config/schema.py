"""The pipeline's configuration schema: one pydantic model per stage section.

Every model forbids unknown keys, so a typo fails at flow start with the key's name, the YAML file and
its line, instead of being ignored. `load_config(path)` is the only way configs enter the pipeline.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A config file is missing or invalid; the message names the file, the key and the line."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScratchModel(Section):
    """A small causal LM built from a config, with a byte-level BPE tokenizer trained on the scraped code."""

    architecture: Literal["llama", "gpt_neox"] = "llama"
    vocab_size: int = Field(2048, ge=300)
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(256, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    tokenizer_max_docs: int = Field(3000, gt=0)
    # A short causal-LM pretraining on the scraped code, so that "base" is a (weak) code model rather than
    # random weights: LoRA on a random base barely moves the loss, and base-vs-fine-tuned means nothing.
    pretrain_steps: int = Field(0, ge=0)
    pretrain_lr: float = Field(3e-3, gt=0)
    pretrain_batch_size: int = Field(8, gt=0)
    pretrain_block_size: int = Field(256, gt=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchModel:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.pretrain_block_size > self.max_position_embeddings:
            raise ValueError(
                f"pretrain_block_size ({self.pretrain_block_size}) exceeds max_position_embeddings "
                f"({self.max_position_embeddings})"
            )
        return self


class ModelConfig(Section):
    """Exactly one of: `name_or_path` (hub id or local folder) or `scratch` (built offline)."""

    name_or_path: str | None = None
    scratch: ScratchModel | None = None
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.name_or_path is None) == (self.scratch is None):
            raise ValueError("set exactly one of model.name_or_path or model.scratch")
        return self


class ScrapeConfig(Section):
    package: str = "sklearn"
    exclude_dirs: list[str] = ["tests", "externals", "_build_utils"]
    include_private: bool = False
    max_files: int | None = Field(None, gt=0)


class TeacherConfig(Section):
    """Where Self-Instruct gets its generations: an OpenAI-compatible server or a local transformers model."""

    backend: Literal["local", "openai"] = "local"
    # local: "base" (the pipeline's own base model), a folder or a hub id; openai: the served model's name
    model: str = "base"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key itself never goes in YAML
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_new_tokens: int = Field(256, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _openai_needs_url(self) -> TeacherConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("teacher.backend 'openai' needs teacher.base_url")
        return self


class SelfInstructConfig(Section):
    enabled: bool = True
    num_rounds: int = Field(2, ge=1)
    prompts_per_round: int = Field(4, gt=0)
    examples_per_prompt: int = Field(3, gt=0)
    seed_tasks: str | None = None  # JSONL path; default: the 20 code seed tasks shipped in tasks/data
    max_similarity: float = Field(0.7, gt=0.0, le=1.0)  # ROUGE-L against the pool, as in Self-Instruct


class SynthesizeConfig(Section):
    docstring_pairs: bool = True
    max_docstring_pairs: int | None = Field(None, gt=0)
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    teacher: TeacherConfig = TeacherConfig()


class CleanConfig(Section):
    exact_dedup: bool = True
    require_parse: bool = True
    min_instruction_chars: int = Field(10, ge=0)
    max_instruction_chars: int = Field(4000, gt=0)
    min_output_chars: int = Field(20, ge=0)
    max_output_chars: int = Field(8000, gt=0)


class TokenizeConfig(Section):
    template: Literal["alpaca", "codegen_task"] = "alpaca"
    max_length: int = Field(512, gt=8)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    max_test_rows: int | None = Field(None, gt=0)
    mask_prompt: bool = True  # loss on the response only
    packing: bool = False
    fim_rate: float = Field(0.0, ge=0.0, le=1.0)


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


class TrainConfig(Section):
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraSection | None = LoraSection()
    quantization: QuantizationSection | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
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
        return self


class EvaluateConfig(Section):
    max_samples: int = Field(64, gt=0)
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(8, gt=0)


class RegisterConfig(Section):
    model_name: str = Field("code-finetune", min_length=1)
    gate_metric: Literal["rougeL", "rouge1", "rouge2", "perplexity"] = "rougeL"
    min_improvement: float = 0.0  # challenger must beat champion by more than this


# `register` is the stage's name; it shadows only ABCMeta.register, a classmethod nobody calls on configs.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class PipelineConfig(Section):
    name: str
    workspace: str | None = None  # default: $FINETUNE_WORKSPACE, else <repo>/workspace
    seed: int = 0
    model: ModelConfig
    scrape: ScrapeConfig = ScrapeConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    clean: CleanConfig = CleanConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()

    @model_validator(mode="after")
    def _cross_section(self) -> PipelineConfig:
        scratch = self.model.scratch
        if scratch and self.tokenize.max_length > scratch.max_position_embeddings:
            raise ValueError(
                f"tokenize.max_length ({self.tokenize.max_length}) exceeds "
                f"model.scratch.max_position_embeddings ({scratch.max_position_embeddings})"
            )
        # (a hub tokenizer's FIM tokens can only be checked once it is loaded: the tokenize stage does that)
        return self

    def workspace_path(self) -> Path:
        raw = self.workspace or os.environ.get("FINETUNE_WORKSPACE") or str(REPO_ROOT / "workspace")
        return Path(raw).expanduser().resolve()


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line, for error messages."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                sub = (*path, key_node.value)
                lines[sub] = key_node.start_mark.line + 1
                walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _describe(err: dict, lines: dict[tuple, int]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f", line {line}" if line else ""
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    return f"  {key}{where}: {msg}"


def load_config(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a YAML profile; raise ConfigError naming the file, key and line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = _key_lines(text)
        details = "\n".join(_describe(e, lines) for e in exc.errors())
        raise ConfigError(f"{path}: invalid config\n{details}") from None
