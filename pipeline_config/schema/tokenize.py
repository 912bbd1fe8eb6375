"""`split` (the held-out set, read by every stage that could see held-out code) and `tokenize`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline_config.schema.base import Section, one_of
from tasks.common.templates import TEMPLATE_NAMES


class SplitConfig(Section):
    """The held-out set: whole sources (a scraped module file; a synthetic pair on its own) are held out,
    chosen by a seeded hash, so near-identical code never straddles train and test. Every stage that
    could see held-out code (tokenize; a scratch model's pretraining) applies the same rule."""

    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # of sources, not rows
    max_test_rows: int | None = Field(None, gt=0)  # a seeded random sample of the held-out rows


class TokenizeConfig(Section):
    # alpaca (Code Alpaca), codegen_task (000), question_answer (004), chat: the tokenizer's own (002)
    template: str = "alpaca"  # a name of tasks/common/templates.py
    max_length: int = Field(512, gt=8)
    mask_prompt: bool = True  # loss on the response only
    # an example over max_length: truncate it (left: the prompt's start goes, the response stays whole
    # where it fits; right: the prompt stays, the response's end goes) or drop it; both are counted
    overlong: Literal["truncate", "drop"] = "truncate"
    truncation_side: Literal["left", "right"] = "left"
    # whole examples best-fit into max_length blocks, attention and loss stopping at example boundaries
    packing: bool = False
    # Fill-in-the-Middle on the response's code (never the template): the share of training rows, the share
    # of those in SPM order (the rest PSM), and of those with the middle at an AST node instead of random
    # characters. Sentinel tokens the tokenizer lacks are added (embeddings grow in training).
    fim_rate: float = Field(0.0, ge=0.0, le=1.0)
    fim_spm_rate: float = Field(0.5, ge=0.0, le=1.0)
    fim_ast_rate: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("template")
    @classmethod
    def _known_template(cls, value: str) -> str:
        return one_of(value, TEMPLATE_NAMES, "tokenize.template", "a prompt template")
