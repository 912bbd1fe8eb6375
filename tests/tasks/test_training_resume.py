"""Training survives kill -9: the same command resumes from the last checkpoint in the stage's resume folder
and ends where an uninterrupted run ends (same data order, optimizer and RNG state), and reports what the
uninterrupted run reports: the loss and time over all its steps (tasks/training/resume.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_builders import logged_losses, train_cfg, train_job

from tasks.training import recipe
from tasks.training.recipe import train_model
from tasks.training.resume import Earlier, earlier_part, whole_training

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


@pytest.mark.slow
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

    killed = earlier_part(str(resume / "checkpoints" / f"checkpoint-{reached[-1]}"))  # the resume rotates it
    resumed = run(training_data, tiny_model_dir, tmp_path / "resumed", resume)
    assert resumed["steps"] == whole["steps"] == STEPS
    assert resumed["resumed_from_step"] == reached[-1] and whole["resumed_from_step"] is None
    assert logged_losses(tmp_path / "resumed")[-1] == pytest.approx(
        logged_losses(tmp_path / "whole")[-1], abs=1e-4
    )
    # the mean over all 24 steps, not over the steps after the resume
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    assert resumed["train_runtime_s"] > killed.runtime_s > 0  # the killed attempt's time counts


def stop_at(step: int):
    """A callback that ends training after `step`, as a kill right after that step's checkpoint would."""
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                control.should_training_stop = True

    return StopAt()


@pytest.mark.slow
def test_a_resumed_training_reports_the_loss_of_every_step(
    training_data, tiny_model_dir, tmp_path, monkeypatch
):
    """Saving at step 5 of a run that logs every 2 steps: step 5's loss is in no log unless the checkpoint
    logs it, and the resumed run's mean would miss it."""
    cfg = train_cfg("lora", max_steps=10, save_steps=5, logging_steps=2)
    whole = train_model(train_job(training_data, tiny_model_dir, tmp_path / "whole", cfg))
    add_early_stopping = recipe.add_early_stopping
    monkeypatch.setattr(recipe, "add_early_stopping", lambda trainer, c: trainer.add_callback(stop_at(5)))
    resume = tmp_path / "resume"
    stopped = train_model(train_job(training_data, tiny_model_dir, tmp_path / "stopped", cfg, resume=resume))
    monkeypatch.setattr(recipe, "add_early_stopping", add_early_stopping)
    assert stopped["steps"] == 5
    resumed = train_model(train_job(training_data, tiny_model_dir, tmp_path / "resumed", cfg, resume=resume))

    assert (resumed["steps"], resumed["resumed_from_step"], whole["resumed_from_step"]) == (10, 5, None)
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-5)
    assert logged_losses(tmp_path / "resumed") == pytest.approx(logged_losses(tmp_path / "whole"), rel=1e-5)
    assert resumed["first_logged_loss"] == pytest.approx(whole["first_logged_loss"], rel=1e-5)
    assert resumed["mean_loss_first_quarter"] == pytest.approx(whole["mean_loss_first_quarter"], rel=1e-5)
    saved = json.loads((resume / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    clock = saved["stateful_callbacks"]["CheckpointClock"]["attributes"]["train_runtime_s"]
    assert resumed["train_runtime_s"] > clock > 0  # the stopped attempt's time counts
    # the history's last entry, the trainer's own summary of the call, reads as the report
    last = json.loads((tmp_path / "resumed" / "log_history.json").read_text())[-1]
    assert (last["train_loss"], last["train_runtime"]) == (resumed["train_loss"], resumed["train_runtime_s"])


def write_checkpoint(folder: Path, history: list[dict], step: int, clock: float | None) -> str:
    state = {"global_step": step, "log_history": history, "stateful_callbacks": {}}
    if clock is not None:
        state["stateful_callbacks"]["CheckpointClock"] = {
            "args": {},
            "attributes": {"train_runtime_s": clock},
        }
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    return str(folder)


def test_the_earlier_part_is_read_from_the_checkpoint(tmp_path):
    history = [
        {"loss": 2.0, "step": 2, "train_runtime": 1.5},
        {"eval_loss": 9.0, "step": 2},
        {"loss": 1.0, "step": 4, "train_runtime": 3.0},
    ]
    earlier = earlier_part(write_checkpoint(tmp_path / "checkpoint-4", history, 4, clock=7.5))
    assert earlier == Earlier(step=4, loss_sum=2.0 * 2 + 1.0 * 2, steps_logged=4, runtime_s=7.5)
    # saved without the clock: the time the attempt itself logged last (earlier attempts' unknown)
    assert earlier_part(write_checkpoint(tmp_path / "checkpoint-5", history, 5, None)).runtime_s == 3.0
    assert earlier_part(None) is None


def test_the_whole_training_adds_the_resumed_part_to_the_earlier_one():
    earlier = Earlier(step=4, loss_sum=6.0, steps_logged=4, runtime_s=7.5)
    assert whole_training(earlier, 10, 0.5, 2.5) == (pytest.approx((6.0 + 0.5 * 6) / 10), 10.0)
    # the steps between the checkpoint's last log and its save were never logged: the mean leaves them out
    unlogged = Earlier(step=5, loss_sum=6.0, steps_logged=4, runtime_s=7.5)
    assert whole_training(unlogged, 10, 0.5, 2.5)[0] == pytest.approx((6.0 + 0.5 * 5) / 9)
    assert whole_training(None, 10, 0.5, 2.5) == (0.5, 2.5)


def test_a_checkpoint_cut_off_mid_save_is_not_resumed_from(tmp_path: Path) -> None:
    from tasks.training.resume import last_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for step, whole in ((10, True), (20, True), (30, False)):  # killed while saving step 30
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if whole:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(checkpoints / "checkpoint-20")
    assert last_checkpoint(tmp_path / "nothing-yet") is None
