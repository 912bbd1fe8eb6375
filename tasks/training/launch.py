"""Training in several processes: `train.num_processes` > 1 runs `train_model` data-parallel (DDP) under
`accelerate launch`, one process per GPU, or N CPU processes talking over gloo.

`train_in_processes` (called by the stage with the `TrainJob` it would give `train_model`) writes the job
to a JSON file, starts `accelerate launch -m tasks.training.launch ARGS.json`, streams the processes'
output to the logger and returns the report that rank 0 wrote. `main` runs in each rank: every rank
trains its share of the job (`TrainJob.for_rank`), rank 0 alone writes the model folder and the report
(`train_model` returns early on the others).

`train.batch_size` is the global batch of a step; each rank is given batch_size / num_processes rows.
accelerate's BatchSamplerShard deals the small batches of one seeded shuffle to the ranks in turn, so the
N batches of step k are, together, batch k of a one-process run with the same seed, and the gradients
DDP averages are that batch's (the trainer divides the loss by the token count of all ranks). One
exception: a short last batch of an epoch is filled up with rows from the epoch's start (accelerate's
`even_batches`), so that every rank takes the step.

Run alone: `accelerate launch --multi_gpu --num_processes 2 -m tasks.training.launch ARGS.json`, ARGS.json
as `write_arguments` writes it.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from pipeline_config.schema import TrainConfig
from tasks.common.models import pick_device
from tasks.common.runtime import logger
from tasks.training.job import TrainJob
from tasks.training.recipe import DETAIL, train_model

# of the processes' output, in the error when they fail: the launcher's own traceback alone takes ~35
TAIL_LINES = 100


def free_port() -> int:
    """A loopback port free now, for the ranks' rendezvous (two runs on one machine must not share one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def threads_per_process(processes: int) -> int:
    """The cores this process may use, shared out: N ranks each on all cores oversubscribe the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


def launch_command(cfg: TrainConfig, args_file: Path, port: int) -> list[str]:
    threads = threads_per_process(cfg.num_processes)
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    if cfg.accelerate_config:
        command += ["--config_file", cfg.accelerate_config]
    else:
        # --multi_gpu is accelerate's torchrun launcher, for CPU ranks too: the ranks pick gloo themselves
        # (TrainingArguments(use_cpu=True)). `--cpu` would start one process: without mpirun, accelerate
        # runs a CPU job as a single process whatever --num_processes says.
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += [
        "--num_processes", str(cfg.num_processes),
        "--num_cpu_threads_per_process", str(threads),
        "--main_process_port", str(port),
        "-m", "tasks.training.launch", str(args_file),
    ]  # fmt: skip
    return command


def write_arguments(path: Path, job: TrainJob) -> Path:
    """The job as JSON (the config section as model_dump), and where rank 0 reports."""
    report_file = path.parent / "report.json"
    path.write_text(json.dumps({"job": job.to_json(), "report_file": str(report_file)}, indent=1))
    return report_file


def train_in_processes(job: TrainJob) -> dict:
    """`train_model` in `train.num_processes` processes; the report rank 0 wrote, with `processes`."""
    cfg = job.cfg
    check_processes(cfg)
    log = logger()
    with tempfile.TemporaryDirectory(prefix="train-launch-") as work:
        args_file = Path(work) / "arguments.json"
        report_file = write_arguments(args_file, job)
        command = launch_command(cfg, args_file, free_port())
        threads = str(threads_per_process(cfg.num_processes))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        log.info("training in %d processes: %s", cfg.num_processes, " ".join(command))
        tail = stream(command, env, log)
        if tail is not None:
            raise RuntimeError(
                f"training in train.num_processes={cfg.num_processes} processes failed:"
                + "".join(f"\n{p.stem[6:]}: {p.read_text()}" for p in sorted(Path(work).glob("error-rank*")))
                + "\nThe last lines of their output:\n"
                + "\n".join(tail)
            )
        if not report_file.is_file():
            raise RuntimeError(f"the {cfg.num_processes} training processes ended without rank 0's report")
        return json.loads(report_file.read_text())


def accelerate_config_file(cfg: TrainConfig) -> Path | None:
    """`train.accelerate_config`, checked: a missing file is an error that names the key."""
    if not cfg.accelerate_config:
        return None
    if not Path(cfg.accelerate_config).is_file():
        raise FileNotFoundError(f"train.accelerate_config: no such file: {cfg.accelerate_config}")
    return Path(cfg.accelerate_config)


def check_processes(cfg: TrainConfig) -> None:
    """Fail before starting N processes that could not all run."""
    accelerate_config_file(cfg)
    if pick_device(cfg.device) == "cuda":
        import torch

        if torch.cuda.device_count() < cfg.num_processes:
            raise ValueError(
                f"train.num_processes is {cfg.num_processes} but {torch.cuda.device_count()} CUDA devices "
                "are visible: one process per GPU"
            )


def stream(command: list[str], env: dict[str, str], log: logging.Logger) -> list[str] | None:
    """Run `command`, each output line to `log` (as a detail: flows/quiet.py); None on success, else the last
    lines of its output."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    # its own process group: stopping this run (Ctrl-C, a cancelled flow run) stops every rank with it
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            log.info("%s", line, extra=DETAIL)  # the ranks' log: the run's log file, not the terminal
        code = process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise
    return None if code == 0 else [*tail, f"(exit status {code})"]


def main(argv: list[str] | None = None) -> None:
    """One rank: train on its share of every batch; rank 0 writes the model folder and the report."""
    from accelerate import PartialState

    args = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    # one copy of each log line (rank 0's); the other ranks speak up only about problems
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    job = TrainJob.from_json(args["job"])
    if pick_device(job.cfg.device) == "cuda":
        import torch

        # before the model loads: "cuda" must mean this rank's GPU, not GPU 0 for every rank
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        report = train_model(job.for_rank(world))
    except BaseException as error:
        # the launcher's own traceback ends the output: the parent puts the ranks' errors first
        lines = traceback.format_exception_only(error)
        Path(args["report_file"]).with_name(f"error-rank{rank}.txt").write_text("".join(lines).strip())
        raise
    state = PartialState()  # the distributed state the trainer ran under
    if state.is_main_process:
        report["processes"] = state.num_processes
        Path(args["report_file"]).write_text(json.dumps(report, indent=1))
    # Leave together, through the collective shutdown: a rank that returned early (only rank 0 saves) and
    # exits with its gloo group alive can abort at interpreter exit (SIGABRT, seen once in CI), and the
    # launcher then kills rank 0 in the middle of saving.
    state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()
