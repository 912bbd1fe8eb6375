"""One training run as data: what `train_model` (tasks/training/recipe.py) reads, where it writes, and the
recipe it follows. The stage builds it from its inputs; the launcher (tasks/training/launch.py) sends it to
every rank as JSON."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline_config.schema import TrainConfig


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    dataset_dir: Path  # the tokenize stage's splits, and its tokenizer where it added tokens
    out_dir: Path  # model/, log_history.json, loss.png
    model_path: Path | str  # the base model's folder
    template_file: Path  # the tokenize stage's prompt template: stored with the model
    cfg: TrainConfig
    seed: int
    trust_remote_code: bool = False
    # outlives a killed attempt: checkpoints go here, and the next attempt resumes from the last one
    resume_dir: Path | None = None

    def for_rank(self, processes: int) -> TrainJob:
        """The job of one of `processes` data-parallel ranks: train.batch_size is the global batch."""
        return replace(self, cfg=self.cfg.model_copy(update={"batch_size": self.cfg.batch_size // processes}))

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_dir": str(self.dataset_dir),
            "out_dir": str(self.out_dir),
            "model_path": str(self.model_path),
            "template_file": str(self.template_file),
            "train": self.cfg.model_dump(mode="json"),
            "seed": self.seed,
            "trust_remote_code": self.trust_remote_code,
            "resume_dir": str(self.resume_dir) if self.resume_dir else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainJob:
        return cls(
            dataset_dir=Path(data["dataset_dir"]),
            out_dir=Path(data["out_dir"]),
            model_path=data["model_path"],
            template_file=Path(data["template_file"]),
            cfg=TrainConfig.model_validate(data["train"]),
            seed=data["seed"],
            trust_remote_code=data["trust_remote_code"],
            resume_dir=Path(data["resume_dir"]) if data["resume_dir"] else None,
        )
