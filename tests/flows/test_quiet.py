"""Library chatter and the run log's details go to the run's log file, not the terminal (flows/quiet.py);
`--verbose` shows them all."""

from __future__ import annotations

import logging
import os
import re
import subprocess

import pytest

from flows.quiet import library_output_to


def test_a_library_warning_goes_to_the_log_file(tmp_path, caplog):
    log = tmp_path / "logs" / "run.log"
    with caplog.at_level(logging.WARNING), library_output_to(log):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")
    assert "Failed to load CPU gemm_4bit_forward" in log.read_text()
    assert "gemm_4bit" not in caplog.text  # never reached the root logger's handlers (Prefect's console)
    assert logging.getLogger("bitsandbytes").propagate  # restored for an in-process caller
    # and its environment: a subprocess it starts later (a test's `finetune --verbose`) shows the bars
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_library_info_and_our_details_go_to_the_log_file_and_our_news_to_the_terminal(tmp_path):
    from prefect.logging.handlers import PrefectConsoleHandler

    from tasks.training import recipe

    log = tmp_path / "logs" / "run.log"
    step, news = record("step 2/6 {'loss': 6.1}", detail=True), record("resuming training from step 4")
    step.pathname = news.pathname = recipe.__file__  # our lines; one made here (tests/) reads as a library's
    library = record("Finished in state Completed()")
    with library_output_to(log):
        [console] = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
        assert [bool(console.filter(r)) for r in (step, news, library)] == [False, True, False]
    assert "step 2/6" in log.read_text() and "Finished in state" in log.read_text()
    assert "resuming" not in log.read_text()
    assert console.filter(step) and console.filter(library)  # an in-process caller's console is as it was


# what libraries (and the trainer's line per logged step) write during a tiny run, seen with --verbose
LIBRARY_LINES = {
    "Prefect's state changes": r"Finished in state Completed\(\)",
    "MLflow's INFO lines": r"INFO mlflow\.",
    "loaders' progress bars": r"Loading weights: +\d+%",
    "the trainer's steps": r"step \d+/6 \{'loss'",
}


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_the_terminal_of_a_run_shows_the_table_and_no_library_lines(
    prefect_server, tiny_profile, tmp_path, verbose
):
    from tests.conftest import REPO
    from tests.flows.helpers import FINETUNE, cli_env

    # a person's default level: the tests' own (WARNING) would hide every INFO line whatever the CLI did
    env = {**cli_env(prefect_server, tmp_path), "PREFECT_LOGGING_LEVEL": "INFO"}
    command = [FINETUNE, "run", "--config", str(tiny_profile()), *(["--verbose"] if verbose else [])]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-4000:]
    [train_row] = [line for line in done.stdout.splitlines() if line.startswith("train ")]
    assert re.search(
        r"lora, 6 steps, train loss \d\.\d{3} -> \d\.\d{3} \(mean of the first and last", train_row
    )
    shown = {name for name, pattern in LIBRARY_LINES.items() if re.search(pattern, terminal)}
    if verbose:
        assert shown == set(LIBRARY_LINES)
        assert len(re.findall(LIBRARY_LINES["the trainer's steps"], terminal)) == 3  # logging_steps 2 of 6
    else:
        assert shown == set()
        [log] = (tmp_path / "ws" / "logs").glob("*.log")
        logged = log.read_text()
        assert "task run 'train': step 2/6 {'loss'" in logged and "INFO mlflow." in logged
        assert "task run 'register': Finished in state Completed()" in logged
