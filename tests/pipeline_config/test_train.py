"""`train`: closed choices, the values transformers accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_config import OPTIMIZER_NAMES, SCHEDULER_TYPES, load_config
from tests.pipeline_config.helpers import VALID, raises_config_error, write


def with_train(tmp_path: Path, lines: str) -> Path:
    return write(tmp_path, VALID.replace("  method: lora\n", f"  method: lora\n{lines}"))


def test_choice_lists_equal_transformers_enums():
    """Fails when a transformers upgrade adds or removes a scheduler or optimizer: update
    pipeline_config/schema/train.py."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert SCHEDULER_TYPES == {e.value for e in SchedulerType} and len(SCHEDULER_TYPES) == len(SchedulerType)
    assert OPTIMIZER_NAMES == {e.value for e in OptimizerNames} and len(OPTIMIZER_NAMES) == len(
        OptimizerNames
    )


@pytest.mark.parametrize(
    "lines, expected",
    [
        (
            "  lr_scheduler: cosin\n",
            "train.lr_scheduler, line 8: not a transformers SchedulerType value; did you mean 'cosine'",
        ),
        ("  optim: adamw\n", "train.optim, line 8: not a transformers OptimizerNames value; did you mean"),
        ("  optim: adamw\n", "'adamw_torch'"),
        ("  optim: zzz\n", "train.optim must be 'adafactor', 'adagrad', "),
        ("  lr_scheduler: reduce_lr_on_plateau\n", "'reduce_lr_on_plateau' needs train.eval_steps"),
        ("  lr_scheduler: cosine_with_min_lr\n", "needs transformers' lr_scheduler_kwargs (min_lr)"),
        ("  optim: galore_adamw\n", "'galore_adamw' needs transformers' optim_target_modules"),
        ("  early_stopping_patience: 2\n", "train.early_stopping_patience need train.eval_steps"),
        (
            "  eval_steps: 10\n  save_steps: 15\n  load_best_model_at_end: true\n",
            "needs train.save_steps, a multiple of train.eval_steps (got save_steps 15, eval_steps 10)",
        ),
    ],
)
def test_train_choices(tmp_path, lines, expected):
    assert expected in raises_config_error(with_train(tmp_path, lines))


def test_every_usable_choice_loads(tmp_path):
    schedulers = SCHEDULER_TYPES - {"cosine_with_min_lr", "cosine_warmup_with_min_lr"}
    for name in sorted(schedulers):
        cfg = load_config(with_train(tmp_path, f"  lr_scheduler: {name}\n  eval_steps: 10\n"))
        assert cfg.train.lr_scheduler == name
    for name in sorted(n for n in OPTIMIZER_NAMES if not n.startswith(("galore_", "apollo_"))):
        assert load_config(with_train(tmp_path, f"  optim: {name}\n")).train.optim == name
