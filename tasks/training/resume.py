"""A training resumed from a checkpoint reports the whole training: its loss and time over every step, and
the step it resumed from.

The trainer restores its state from the checkpoint (the step, the log history, the tokens seen), but it
counts `train_loss` and `train_runtime` from the resume on: a run killed at step 120 of 240 and resumed
reported the mean loss of steps 121-240 only. What the earlier part needs is saved with each checkpoint:
- the losses: `CheckpointClock` logs at every step that saves, so the checkpoint's log history holds the
  loss of each of its steps (a logged loss is the mean over the steps since the previous log; the steps
  since the last log would otherwise die with a killed process);
- the time: as an `ExportableState` callback, `CheckpointClock` has the trainer write the training time so
  far into the checkpoint's trainer_state.json (`stateful_callbacks`), the file a checkpoint gets last.
`whole_training` adds the resumed part to what the checkpoint it resumed from recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK, RUNTIME = "CheckpointClock", "train_runtime_s"  # its entry in trainer_state.json's stateful_callbacks


def last_checkpoint(resume_dir: Path | None) -> str | None:
    """The newest checkpoint that was saved whole: a kill during a save leaves a folder without the
    trainer state, written last, and resuming from it would fail or resume from half a checkpoint."""
    folder = resume_dir / "checkpoints" if resume_dir is not None else None
    if folder is None or not folder.is_dir():
        return None
    done = [
        c
        for c in folder.glob("checkpoint-*")
        if c.name[11:].isdigit() and (c / "trainer_state.json").is_file()
    ]
    return str(max(done, key=lambda c: int(c.name[11:]))) if done else None


def checkpoint_step(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def checkpoint_clock(earlier_runtime_s: float = 0.0):
    """The callback that makes each checkpoint carry the whole training up to it (its losses and time);
    `earlier_runtime_s`: the time of the attempts before this one, from the checkpoint it resumed from."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class CheckpointClock(TrainerCallback, ExportableState):
        def __init__(self, earlier_runtime_s: float = 0.0) -> None:
            self.earlier_runtime_s = earlier_runtime_s
            self.started: float | None = None

        def state(self) -> dict:
            # asked as each checkpoint's trainer_state.json is written: the time is saved in the same file,
            # so a checkpoint that counts as saved (last_checkpoint) has it
            now = 0.0 if self.started is None else time.monotonic() - self.started
            return {"args": {}, "attributes": {RUNTIME: self.earlier_runtime_s + now}}

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            # a state resumed from a checkpoint saved without this callback: the save looks its entry up
            state.stateful_callbacks.setdefault(CLOCK, self.state())

        def on_step_end(self, args, state, control, **kwargs):
            # after DefaultFlowCallback has decided this step saves: log first, the save then holds the log
            if control.should_save:
                control.should_log = True

    return CheckpointClock(earlier_runtime_s)


@dataclass(frozen=True)
class Earlier:
    """What the checkpoint a training resumed from holds about the steps before it."""

    step: int
    loss_sum: float  # the per-step losses of the logged steps, summed
    steps_logged: int  # the steps those losses cover: `step` when the checkpoint logged at its own step
    runtime_s: float


def logged_loss_sum(history: list[dict], up_to: int) -> tuple[float, int]:
    """The sum of the per-step losses logged up to step `up_to`, and the steps it covers: a logged `loss`
    is the mean over the steps since the previous log."""
    total, previous = 0.0, 0
    for entry in history:
        if "loss" in entry and entry["step"] <= up_to:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return total, previous


def earlier_part(checkpoint: str | None) -> Earlier | None:
    """None without a checkpoint. One saved without `CheckpointClock` gives the time its own attempt logged
    last, without earlier attempts'."""
    if checkpoint is None:
        return None
    folder = Path(checkpoint)
    state = json.loads((folder / "trainer_state.json").read_text())
    step = state["global_step"]
    history = state.get("log_history") or []
    loss_sum, covered = logged_loss_sum(history, step)
    runtime = (state.get("stateful_callbacks") or {}).get(CLOCK, {}).get("attributes", {}).get(RUNTIME)
    if runtime is None:
        runtime = max((h["train_runtime"] for h in history if "train_runtime" in h), default=0.0)
    return Earlier(step, loss_sum, covered, runtime)


def whole_training(
    earlier: Earlier | None, steps: int, loss: float, runtime_s: float | None
) -> tuple[float, float | None]:
    """(train_loss, train_runtime_s) over every step: `loss` and `runtime_s` are the trainer's, over the
    steps after `earlier.step` (its `_total_loss_scalar` / steps run in this call, and this call's time)."""
    if earlier is None:
        return loss, runtime_s
    after = steps - earlier.step
    mean = (earlier.loss_sum + loss * after) / max(earlier.steps_logged + after, 1)
    return mean, None if runtime_s is None else earlier.runtime_s + runtime_s
