"""Training in several processes (tasks/training/launch.py): 2 CPU processes over gloo train the same model
as 1 process on the same global batches (slow); the config checks and the launch command (fast)."""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest
import yaml
from training_builders import logged_losses, train_cfg, train_job

from pipeline_config import ConfigError, load_config
from tasks.common.templates import TEMPLATE_FILE
from tasks.training.job import TrainJob
from tasks.training.launch import launch_command, train_in_processes
from tasks.training.recipe import train_model

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = sorted((REPO / "pipeline_config" / "accelerate").glob("*.yaml"))

# --------------------------------------------------------------------------------------------------------
# Config and command (fast)
# --------------------------------------------------------------------------------------------------------


def config_error(tiny_profile, **train) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(tiny_profile(lambda raw: raw["train"].update(train)))
    return str(err.value)


def test_num_processes_errors_name_the_key(tiny_profile) -> None:
    assert "train.num_processes" in config_error(tiny_profile, num_processes=0)
    message = config_error(tiny_profile, batch_size=6, num_processes=4)
    assert "train.batch_size (6) must be a multiple of train.num_processes (4)" in message
    message = config_error(tiny_profile, num_processes=1, accelerate_config="x.yaml")
    assert "train.accelerate_config" in message and "train.num_processes" in message
    cfg = load_config(tiny_profile(lambda raw: raw["train"].update(batch_size=8, num_processes=2)))
    assert (cfg.train.num_processes, cfg.train.batch_size) == (2, 8)


def test_launch_command(tmp_path: Path) -> None:
    """DDP through accelerate's torchrun launcher (`--cpu` runs one process); a config file replaces it."""
    command = launch_command(train_cfg("lora", num_processes=2), tmp_path / "a.json", 29123)
    assert command[1:4] == ["-m", "accelerate.commands.accelerate_cli", "launch"]
    assert "--multi_gpu" in command and "--cpu" not in command
    for flag, value in [("--num_processes", "2"), ("--main_process_port", "29123")]:
        assert command[command.index(flag) + 1] == value
    assert command[-3:] == ["-m", "tasks.training.launch", str(tmp_path / "a.json")]
    fsdp = str(REPO / "pipeline_config/accelerate/fsdp.yaml")
    command = launch_command(
        train_cfg("lora", num_processes=2, accelerate_config=fsdp), tmp_path / "a.json", 1
    )
    assert command[command.index("--config_file") + 1] == fsdp and "--multi_gpu" not in command


def test_accelerate_configs_load() -> None:
    """The documented FSDP and DeepSpeed files are valid accelerate configs (not run here: no GPU)."""
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.name for p in ACCELERATE_CONFIGS} == {"fsdp.yaml", "deepspeed_zero3.yaml"}
    for path in ACCELERATE_CONFIGS:
        assert path.read_text().startswith("#"), f"{path.name} opens with the command that uses it"
        assert yaml.safe_load(path.read_text())["distributed_type"] in ("FSDP", "DEEPSPEED")
        load_config_from_file(str(path))


# --------------------------------------------------------------------------------------------------------
# 1 process vs 2 processes (slow)
# --------------------------------------------------------------------------------------------------------


def adapter(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(model_dir / "adapter_model.safetensors")


def launch_once_more_after_a_signal(job: TrainJob) -> dict:
    """`train_in_processes`, started again once if a rank died of a signal (no Python error of its own).

    Once in CI a rank aborted (SIGABRT) with no error of its own, and it was not reproduced in 10 runs
    here, loaded or not. One more start keeps an unexplained native crash of torch's gloo backend from
    failing the suite; the warning, with the ranks' output, keeps it visible in the test summary. A Python
    error in a rank, or a second crash, still fails the test."""
    try:
        return train_in_processes(job)
    except RuntimeError as error:
        ranks_own_errors = re.search(r"^rank\d+: ", str(error).split("The last lines")[0], re.MULTILINE)
        if ranks_own_errors or not re.search(r"Signal \d+ \(SIG\w+\) received", str(error)):
            raise
        warnings.warn(f"a training rank died of a signal; started again once:\n{error}", stacklevel=2)
    for folder in (job.out_dir, job.resume_dir):  # from scratch: no half-written output or checkpoint
        shutil.rmtree(folder, ignore_errors=True)
    return train_in_processes(job)


@pytest.mark.slow
def test_two_processes_train_like_one(training_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Same seed, same global batch of 4 (2 rows per process), LoRA dropout 0: the same losses step by step
    and the same adapter. Checkpoints hold one RNG state per rank: two processes really trained.

    The steps of one epoch's full batches: the short last batch differs by design (accelerate fills it up
    with rows from the epoch's start so that both ranks step; one process trains on the short batch)."""
    from datasets import load_from_disk

    steps = len(load_from_disk(str(training_data / "dataset"))["train"]) // 4
    assert steps >= 6
    cfg = dict(max_steps=steps, batch_size=4, logging_steps=1)
    start = time.perf_counter()
    one = train_model(train_job(training_data, tiny_model_dir, tmp_path / "one", train_cfg("lora", **cfg)))
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    two_processes = train_cfg("lora", num_processes=2, save_steps=steps, **cfg)
    two = launch_once_more_after_a_signal(
        train_job(training_data, tiny_model_dir, tmp_path / "two", two_processes, resume=tmp_path / "resume")
    )
    two_s = time.perf_counter() - start
    losses_one, losses_two = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    print(f"1 process {one_s:.1f} s, 2 processes {two_s:.1f} s; losses {losses_one} vs {losses_two}")

    assert two["processes"] == 2 and "processes" not in one
    assert two["steps"] == one["steps"] == steps
    assert len(losses_two) == len(losses_one) == steps
    assert losses_two == pytest.approx(losses_one, rel=1e-3)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
    assert losses_one[-1] < losses_one[0] - 0.05  # it learned: equal losses are not two flat lines
    a, b = adapter(tmp_path / "one" / "model"), adapter(tmp_path / "two" / "model")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3 * max(float(a[k].abs().max()) for k in a)
    checkpoint = tmp_path / "resume" / "checkpoints" / f"checkpoint-{steps}"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert (tmp_path / "two" / "model" / TEMPLATE_FILE).is_file()
    assert json.loads((tmp_path / "two" / "log_history.json").read_text())[-1]["step"] == steps

    # the stage's resume folder reaches every rank: a second attempt continues from the checkpoint
    more = train_cfg("lora", num_processes=2, save_steps=steps, **{**cfg, "max_steps": steps + 2})
    again = train_in_processes(
        train_job(training_data, tiny_model_dir, tmp_path / "again", more, resume=tmp_path / "resume")
    )
    assert (again["resumed_from_step"], again["steps"]) == (steps, steps + 2)


@pytest.mark.slow
def test_failed_processes_name_the_key_and_show_the_error(
    training_data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    job = TrainJob(
        dataset_dir=tmp_path / "no-dataset",
        out_dir=tmp_path / "out",
        model_path=str(tiny_model_dir),
        template_file=training_data / TEMPLATE_FILE,
        cfg=train_cfg("lora", num_processes=2),
        seed=0,
    )
    with pytest.raises(RuntimeError, match=r"train\.num_processes=2") as err:
        train_in_processes(job)
    message = str(err.value)
    # each rank's own error first (the launcher's traceback ends their output), then the output's tail
    assert "rank0: FileNotFoundError" in message and "rank1: FileNotFoundError" in message
    assert "no-dataset" in message.split("The last lines")[0]


def test_accelerate_config_content_is_in_the_train_key(tiny_profile, tmp_path: Path) -> None:
    """Editing the FSDP/DeepSpeed file trains a different model: the train stage must not stay cached."""
    from tasks import training

    accelerate = tmp_path / "fsdp.yaml"
    accelerate.write_text((REPO / "pipeline_config/accelerate/fsdp.yaml").read_text())
    cfg = load_config(
        tiny_profile(
            lambda raw: raw["train"].update(batch_size=4, num_processes=2, accelerate_config=str(accelerate))
        )
    )
    before = training.SPEC.key(cfg, {"tokenize": "t", "base_model": "b"})
    assert training.SPEC.key(cfg, {"tokenize": "t", "base_model": "b"}) == before
    accelerate.write_text(
        accelerate.read_text().replace("reshard_after_forward: true", "reshard_after_forward: false")
    )
    assert training.SPEC.key(cfg, {"tokenize": "t", "base_model": "b"}) != before
    accelerate.unlink()
    with pytest.raises(FileNotFoundError, match="train.accelerate_config"):
        training.SPEC.key(cfg, {"tokenize": "t", "base_model": "b"})
