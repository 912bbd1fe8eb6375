"""Training survives kill -9: the same command resumes from the last checkpoint in the stage's resume folder
and ends where an uninterrupted run ends (same data order, optimizer and RNG state)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_builders import logged_losses, train_cfg, train_job

from tasks.training.recipe import train_model

pytestmark = pytest.mark.slow

STEPS, SAVE = 24, 4

CHILD = f"""
import sys, torch
from pathlib import Path
sys.path.insert(0, "tests/tasks")
torch.set_num_threads(1)
from training_builders import train_cfg, train_job
from tasks.training.recipe import train_model
data, out, model, resume = map(Path, sys.argv[1:5])
cfg = train_cfg("lora", max_steps={STEPS}, save_steps={SAVE}, logging_steps=2)
train_model(train_job(data, model, out, cfg, resume=resume))
"""


def run(data: Path, model_dir: Path, out: Path, resume: Path | None) -> dict:
    cfg = train_cfg("lora", max_steps=STEPS, save_steps=SAVE, logging_steps=2)
    return train_model(train_job(data, model_dir, out, cfg, resume=resume))


def test_killed_training_resumes_to_the_same_loss(training_data, tiny_model_dir, tmp_path):
    whole = run(training_data, tiny_model_dir, tmp_path / "whole", None)

    resume = tmp_path / "resume"
    args = [str(training_data), str(tmp_path / "killed"), str(tiny_model_dir)]
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args, str(resume)], start_new_session=True)
    deadline = time.time() + 300
    while not list(resume.glob("checkpoints/checkpoint-*/trainer_state.json")):
        assert child.poll() is None, "the training process ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)  # as a killed worker: no cleanup, no final save
    child.wait()
    reached = sorted(
        int(p.parent.name.split("-")[1]) for p in resume.glob("checkpoints/*/trainer_state.json")
    )
    assert reached and reached[-1] < STEPS  # killed mid-run

    resumed = run(training_data, tiny_model_dir, tmp_path / "resumed", resume)
    assert resumed["steps"] == whole["steps"] == STEPS
    assert resumed["resumed_from_step"] == reached[-1] and whole["resumed_from_step"] is None
    assert logged_losses(tmp_path / "resumed")[-1] == pytest.approx(
        logged_losses(tmp_path / "whole")[-1], abs=1e-4
    )


def test_a_checkpoint_cut_off_mid_save_is_not_resumed_from(tmp_path: Path) -> None:
    from tasks.training.recipe import last_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for step, whole in ((10, True), (20, True), (30, False)):  # killed while saving step 30
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if whole:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(checkpoints / "checkpoint-20")
    assert last_checkpoint(tmp_path / "nothing-yet") is None
