"""`model`: where the base model comes from (`model.source`, a union on `kind`), its architecture, and the
optional miniature of it. The base_model stage's registry of source kinds (tasks/base_model/sources.py) is
kept equal to `SOURCE_KINDS` by tests/test_registries.py."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import PACKAGE, Section, one_of

_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


class GGUFSource(Section):
    """A GGUF file shipped inside an installed Python package, found through importlib at run time: the
    profile names the package and the file's path inside it, so it never holds a machine path."""

    kind: Literal["gguf"]
    package: str
    file: str

    @field_validator("package")
    @classmethod
    def _importable_name(cls, value: str) -> str:
        if not PACKAGE.fullmatch(value):
            raise ValueError("must be an importable package name such as 'my_models.weights'")
        return value

    @field_validator("file")
    @classmethod
    def _inside_package(cls, value: str) -> str:
        rel = PurePosixPath(value)
        if not value or rel.is_absolute() or "\\" in value or ".." in rel.parts or ":" in value:
            raise ValueError(
                "must be a relative path inside the package ('models/x.gguf'), not a machine path"
            )
        if rel.suffix != ".gguf":
            raise ValueError("must name a .gguf file")
        return value


class HubSource(Section):
    """A model on the Hugging Face hub (read from the local cache when offline)."""

    kind: Literal["hub"]
    id: str
    revision: str = Field("main", min_length=1)

    @field_validator("id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        if not _HUB_ID.fullmatch(value) or ".." in value:
            raise ValueError("must be a hub id ('org/name'); for a local folder use kind: folder")
        return value


class FolderSource(Section):
    """A local folder written by save_pretrained (model + tokenizer)."""

    kind: Literal["folder"]
    path: str = Field(min_length=1)


def tiny_model(
    *,
    vocab: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    positions: int,
    tokenizer_docs: int,
) -> type[Section]:
    """The dimensions of a tiny model built here with its byte-level BPE tokenizer (a scratch source, a
    miniature): the fields and their bounds are written once, each user gives its own defaults."""

    class TinyModel(Section):
        vocab_size: int = Field(vocab, ge=300)
        hidden_size: int = Field(hidden, gt=0)
        num_layers: int = Field(layers, gt=0)
        num_heads: int = Field(heads, gt=0)
        intermediate_size: int = Field(intermediate, gt=0)
        max_position_embeddings: int = Field(positions, gt=0)
        tokenizer_max_docs: int = Field(tokenizer_docs, gt=0)  # scraped documents the tokenizer learns from

    return TinyModel


class ScratchSource(
    tiny_model(
        vocab=2048, hidden=128, layers=2, heads=4, intermediate=256, positions=512, tokenizer_docs=3000
    )
):
    """A small causal LM built from a config, with a byte-level BPE tokenizer trained on the scraped code
    (the offline default: no hub, no download)."""

    kind: Literal["scratch"]
    architecture: Literal["llama", "gpt_neox"] = "llama"
    # A short causal-LM pretraining on the scraped code, so that "base" is a (weak) code model rather than
    # random weights: LoRA on a random base barely moves the loss, and base-vs-fine-tuned means nothing.
    pretrain_steps: int = Field(0, ge=0)
    pretrain_lr: float = Field(3e-3, gt=0)
    pretrain_batch_size: int = Field(8, gt=0)
    pretrain_block_size: int = Field(256, gt=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchSource:
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


ModelSource = Annotated[GGUFSource | HubSource | FolderSource | ScratchSource, Field(discriminator="kind")]
# the `kind` of each source class, in the union's order (the loader's messages list them)
SOURCE_KINDS = tuple(
    get_args(cls.model_fields["kind"].annotation)[0] for cls in get_args(get_args(ModelSource)[0])
)


# rotary models store nothing per position: a miniature's window costs nothing
class MiniatureSection(
    tiny_model(vocab=1024, hidden=64, layers=2, heads=4, intermediate=128, positions=2048, tokenizer_docs=500)
):
    """`model.miniature`: instead of the source's weights, a tiny random model of the same architecture
    (`model.architecture`, built from its transformers config class) with a byte-level BPE tokenizer trained
    on the scraped code. Everything else of the profile stays (target modules, quantization, optimizer,
    template, FIM, packing): it proves a recipe's mechanics on a CPU, offline, in seconds. `true` takes
    these defaults."""


# The linear layers of each architecture `model.architecture` may name (the last part of their module
# names), as transformers 5 builds them; tests/tasks/test_miniature.py fails when an upgrade changes one.
# Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj; GPTBigCode has q_attn only in
# cross-attention blocks, which StarCoder models do not have.
ARCHITECTURE_LINEAR_MODULES = {
    "codegen": ("qkv_proj", "out_proj", "fc_in", "fc_out", "lm_head"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"),
    "gpt_bigcode": ("c_attn", "c_proj", "c_fc", "lm_head"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "lm_head"),
}


class ModelConfig(Section):
    """Where the base model comes from: `source.kind` is one of gguf, hub, folder or scratch.

    `architecture` (optional) is the source's model_type: the base_model stage checks it against the loaded
    config, train.lora.target_modules is checked against it when the profile loads, and `miniature` builds
    a tiny random model of it instead of fetching the source.
    """

    source: ModelSource
    architecture: str | None = None  # a key of ARCHITECTURE_LINEAR_MODULES
    miniature: MiniatureSection | None = None
    trust_remote_code: bool = False

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return one_of(value, ARCHITECTURE_LINEAR_MODULES, "model.architecture", "an architecture we know")

    @field_validator("miniature", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _miniature_needs(self) -> ModelConfig:
        mini = self.miniature
        if mini is None:
            return self
        if isinstance(self.source, ScratchSource):
            raise ValueError("model.miniature is for pretrained sources: a scratch source is already small")
        if self.architecture is None:
            raise ValueError(
                "model.miniature needs model.architecture (one of "
                f"{', '.join(ARCHITECTURE_LINEAR_MODULES)}): the class to build in miniature"
            )
        if mini.hidden_size % mini.num_heads:
            raise ValueError(
                f"model.miniature.hidden_size ({mini.hidden_size}) must be divisible by "
                f"model.miniature.num_heads ({mini.num_heads})"
            )
        if self.architecture == "codegen" and mini.num_heads % 4:
            # CodeGen splits its fused qkv projection into 4 model-parallel groups
            raise ValueError(
                f"model.miniature.num_heads must be a multiple of 4 for codegen (got {mini.num_heads})"
            )
        return self
