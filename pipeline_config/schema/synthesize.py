"""`synthesize`: the instruction pairs written from the scraped code (docstring pairs, Self-Instruct,
OSS-Instruct), their execution check, and the teacher that writes them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import Precision, Section, one_of
from tasks.common.teacher import BACKENDS as TEACHER_BACKENDS


class TeacherConfig(Section):
    """Where Self-Instruct gets its generations: a local transformers model, or a server in one of the
    dialects of tasks/common/teacher/dialects/ (openai: any OpenAI-compatible server; anthropic)."""

    backend: str = "local"  # local, or a dialect: a module of tasks/common/teacher/dialects/
    # local: "base" (the pipeline's own base model), a folder or a hub id; a server: the served model's name
    model: str = "base"
    base_url: str | None = None
    # the environment variable holding the key (never the key: not in YAML); None: the dialect's own
    # (OPENAI_API_KEY, ANTHROPIC_API_KEY)
    api_key_env: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_new_tokens: int = Field(256, gt=0)
    timeout_s: float = Field(60.0, gt=0)  # per request
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(8, ge=1)  # openai: requests in flight (the local teacher batches instead)
    # Budget for the whole stage (None: unlimited). Reaching a cap stops the teacher cleanly: the prompts
    # left come back unanswered and the stage completes with what it has. Cached calls cost nothing.
    max_requests: int | None = Field(None, gt=0)  # requests sent, retries included (local: completions)
    max_tokens: int | None = Field(None, gt=0)  # prompt + completion tokens (openai: the server's `usage`)
    max_seconds: float | None = Field(None, gt=0)
    cache: bool = True  # keep every finished call on disk (<workspace>/teacher_cache/): re-runs reuse them
    # local: each prompt as one user turn of the tokenizer's chat template (an instruct teacher answers a
    # request); false, or a tokenizer without a chat template: the raw prompt, continued by a completion model
    chat_template: bool = True
    precision: Precision = "auto"  # local: the weights' precision while it generates

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        return one_of(value, TEACHER_BACKENDS, "teacher.backend", "a teacher backend")

    @model_validator(mode="after")
    def _server_needs_url(self) -> TeacherConfig:
        if self.backend != "local" and not self.base_url:
            raise ValueError(f"teacher.backend {self.backend!r} needs teacher.base_url")
        return self


class _WordBounds(Section):
    """Self-Instruct's length filter on instructions, in words."""

    min_words: int = Field(3, gt=0)
    max_words: int = Field(150, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> _WordBounds:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        return self


class SelfInstructConfig(_WordBounds):
    enabled: bool = True
    num_rounds: int = Field(2, ge=1)
    prompts_per_round: int = Field(4, gt=0)
    # in-context tasks per prompt: seed tasks and, once there are some, generated ones (6 + 2 of 8, as
    # Self-Instruct did, scaled to this number)
    examples_per_prompt: int = Field(3, gt=0)
    seed_tasks: str | None = None  # JSONL path; default: the code seed tasks shipped in tasks/synthesize/data
    # drop an instruction whose ROUGE-L F1 against a pooled one exceeds this, as in Self-Instruct
    max_similarity: float = Field(0.7, gt=0.0, le=1.0)


class OssInstructConfig(_WordBounds):
    """Magicoder's OSS-Instruct: each request shows a few consecutive lines of scraped code and asks for a
    self-contained problem inspired by them, its solution and tests."""

    enabled: bool = False
    num_prompts: int = Field(8, gt=0)
    # worked examples shown before the snippet (tasks/synthesize/data/oss_examples.jsonl); 0: Magicoder's
    # zero-shot prompt, for a strong teacher
    examples_per_prompt: int = Field(2, ge=0)
    min_lines: int = Field(1, gt=0)  # of the seed snippet, drawn uniformly from [min_lines, max_lines]
    max_lines: int = Field(15, gt=0)
    max_similarity: float = Field(0.7, gt=0.0, le=1.0)  # ROUGE-L between problems, as Self-Instruct's
    max_words: int = Field(400, gt=0)  # problem descriptions run longer than Self-Instruct's instructions

    @model_validator(mode="after")
    def _lines_ordered(self) -> OssInstructConfig:
        if self.min_lines > self.max_lines:
            raise ValueError(
                f"synthesize.oss_instruct.min_lines ({self.min_lines}) must be <= "
                f"max_lines ({self.max_lines})"
            )
        return self


class VerifyConfig(Section):
    """Execution verification of teacher-written tasks: solution + the teacher's tests in the sandbox."""

    enabled: bool = True
    keep: Literal["passing", "all"] = "passing"  # all: every task, marked metadata.verified true/false
    timeout_s: float = Field(10.0, gt=0)  # wall clock per task
    cpu_s: int = Field(10, gt=0)
    memory_mb: int = Field(1024, gt=0)  # address space (importing scikit-learn needs ~700 MB)
    workers: int = Field(2, ge=1)  # tasks run at once

    @model_validator(mode="before")
    @classmethod
    def _moved_setting(cls, data):
        if isinstance(data, dict) and "allow_unisolated" in data:
            raise ValueError(
                "synthesize.verify.allow_unisolated is gone: the sandbox now isolates without root where the "
                "machine allows user namespaces; to run generated code unisolated set `sandbox.backend: none`"
            )
        return data


class SynthesizeConfig(Section):
    docstring_pairs: bool = True
    max_docstring_pairs: int | None = Field(None, gt=0)
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    oss_instruct: OssInstructConfig = OssInstructConfig()
    verify: VerifyConfig = VerifyConfig()
    teacher: TeacherConfig = TeacherConfig()
    # fewer pairs than this in the end fails the stage, with the counts that explain why
    min_records: int = Field(1, ge=0)
