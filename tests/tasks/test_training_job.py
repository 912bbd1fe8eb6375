"""Tests for tasks/training/job.py: a job survives the JSON trip to the ranks of a multi-process run
unchanged, and each rank's share of it is its slice of the global batch."""

from __future__ import annotations

import json
from pathlib import Path

from training_builders import train_cfg

from pipeline_config.schema import QuantizationSection
from tasks.training.job import TrainJob


def job(tmp_path: Path, resume: Path | None) -> TrainJob:
    return TrainJob(
        dataset_dir=tmp_path / "tokenized" / "dataset",
        out_dir=tmp_path / "out",
        model_path=str(tmp_path / "base"),
        template_file=tmp_path / "tokenized" / "template.json",
        cfg=train_cfg(
            "qlora",
            quantization=QuantizationSection(bits=8),
            batch_size=8,
            num_processes=2,
            save_steps=3,
        ),
        seed=7,
        trust_remote_code=True,
        resume_dir=resume,
    )


def test_a_job_survives_its_json_trip(tmp_path: Path) -> None:
    for resume in (tmp_path / "resume", None):
        sent = job(tmp_path, resume)
        assert TrainJob.from_json(json.loads(json.dumps(sent.to_json()))) == sent


def test_each_rank_trains_its_share_of_the_global_batch(tmp_path: Path) -> None:
    whole = job(tmp_path, tmp_path / "resume")
    share = whole.for_rank(2)
    assert share.cfg.batch_size == 4 and whole.cfg.batch_size == 8
    assert share.cfg.model_dump(exclude={"batch_size"}) == whole.cfg.model_dump(exclude={"batch_size"})
    assert (share.dataset_dir, share.out_dir, share.resume_dir, share.seed) == (
        whole.dataset_dir,
        whole.out_dir,
        whole.resume_dir,
        whole.seed,
    )
