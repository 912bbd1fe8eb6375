"""`register`: the champion gate's primary metric, the baselines it must beat and the guards. Whether the
named metrics are ones the evaluation computes is a rule across sections (pipeline.py)."""

from __future__ import annotations

from pydantic import Field, field_validator

from pipeline_config.metrics import BASELINES
from pipeline_config.schema.base import Section


class GuardConfig(Section):
    """A metric the challenger must not lose on beyond `margin` against its base model (forgetting): the
    lower bound of its paired 95% interval of (challenger - base), in the metric's better direction, must
    be at least -margin."""

    metric: str
    margin: float

    @field_validator("margin")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0: it is how much worse than the base the challenger may be")
        return value


class RegisterConfig(Section):
    model_name: str = Field("code-finetune", min_length=1)
    # `suite.metric` (pipeline_config/metrics.py): the metric promotion is decided on, per item and paired.
    # bits per byte of the held-out references: what the training optimizes, measured on every held-out
    # row, comparable across tokenizers (README "Evaluation")
    primary_metric: str = "heldout.bits_per_byte"
    # the paired interval of (challenger - champion) must lie above this to promote
    min_improvement: float = Field(0.0, ge=0.0)
    # systems the primary metric's paired lower bound must beat besides the champion: its base model, and
    # where the metric scores them echo_input (the prompt's input repeated) or previous_line
    must_beat: list[str] = ["base"]
    guards: list[GuardConfig] = []

    @field_validator("must_beat")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        unknown = [b for b in value if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
        return value
