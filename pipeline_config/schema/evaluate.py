"""`evaluate`: the held-out suite's settings, the pass@k benchmarks (one section per benchmark of the
registry, tasks/common/benchmarks.py `BENCHMARKS`: tests/test_registries.py keeps them equal) and the
completion benchmark."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline_config.schema.base import Precision, Section


class PassAtKConfig(Section):
    """pass@k on a benchmark with executable tests (HumanEval, the scikit-learn doctests), in the sandbox."""

    enabled: bool = False
    problems: int | None = Field(None, gt=0)  # a seeded random subset; None: all of them
    samples: int = Field(1, gt=0)  # per problem: 1 is greedy pass@1; more are sampled at `temperature`
    k: list[int] = [1]
    temperature: float = Field(0.8, gt=0.0, le=2.0)
    max_new_tokens: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _k_fits_samples(self) -> PassAtKConfig:
        if any(k < 1 or k > self.samples for k in self.k):
            raise ValueError(f"every k must be between 1 and samples ({self.samples}); got {self.k}")
        return self


class CompletionConfig(Section):
    """The codebase completion benchmark on held-out code (tasks/evaluation/completion.py): cases per kind
    (0 turns a kind off); FIM runs for models whose tokenizer has the FIM tokens."""

    next_line: int = Field(0, ge=0)
    fim: int = Field(0, ge=0)
    max_new_tokens: int = Field(32, gt=0)


class EvaluateConfig(Section):
    max_samples: int = Field(64, gt=0)
    # "auto": the 95th percentile of the references' token lengths (plus end of sequence), at most
    # max_new_tokens_cap; generations that still hit it are counted in the report
    max_new_tokens: int | Literal["auto"] = "auto"
    max_new_tokens_cap: int = Field(512, gt=0)
    batch_size: int = Field(8, gt=0)
    # the weights' precision while the models generate (greedy outputs can differ from fp32's where two
    # tokens are nearly tied: the benchmark eval_generation measures how often); likelihoods, the scores
    # the gate pairs across runs and machines, are always computed in fp32
    precision: Precision = "auto"
    humaneval: PassAtKConfig = PassAtKConfig()
    # functions of held-out scraped modules whose docstring examples check a written body
    sklearn_doctests: PassAtKConfig = PassAtKConfig()
    completion: CompletionConfig = CompletionConfig()

    @field_validator("max_new_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be > 0 or 'auto'")
        return value
