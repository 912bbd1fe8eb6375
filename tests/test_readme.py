"""The README's commands, run as written: "Try it in a minute", "What you get" (its shell lines and its Python
snippet) and "Running one stage" (on the tiny profile in place of the offline one, which takes ten minutes).
The nightly-deployment commands have their own test (tests/flows/test_serve.py).

Each command runs in a scratch folder with the test's Prefect server, MLflow store and workspace; `.venv/bin/`
and `pipeline_config/` point into this checkout, so the lines run from anywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def shell_lines(title: str) -> list[str]:
    return [line for block in blocks(section(title), "bash") for line in block.splitlines() if line.strip()]


def as_here(line: str) -> str:
    """The README line with this checkout's venv and profiles (and the tiny profile for the offline one)."""
    line = re.sub(r"(?<![\w/])\.venv/bin/", f"{BIN}/", line)
    line = re.sub(r"^finetune ", f"{BIN}/finetune ", line)
    line = line.replace("pipeline_config/offline.yaml", "pipeline_config/tiny.yaml")
    return re.sub(r"(?<![\w/])pipeline_config/", f"{REPO}/pipeline_config/", line)


@pytest.fixture(scope="module")
def env(prefect_server, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("readme")
    # not MLFLOW_REGISTRY_URI: an earlier test's mlflow.set_registry_uri in this process exports it, and
    # a user's shell has none (the registry is then the tracking store)
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"}
    return {
        **inherited,
        "PREFECT_API_URL": prefect_server,
        "FINETUNE_WORKSPACE": str(root / "workspace"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (root / "artifacts").as_uri(),
    }


@pytest.fixture(scope="module")
def cwd(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cwd")
    turns = [{"role": "user", "content": "Write a function that adds two numbers."}]
    (folder / "chat.json").write_text(json.dumps(turns))  # what "What you get"'s --messages line reads
    return folder


def run(line: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["bash", "-c", as_here(line)], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def tried(env, cwd) -> list[subprocess.CompletedProcess]:
    return [run(line, env, cwd) for line in shell_lines("Try it in a minute")]


def test_try_it_in_a_minute_runs_registers_and_loads(tried):
    lines = shell_lines("Try it in a minute")
    assert [line.split()[1] for line in lines] == ["run", "generate", "show"]
    ran, generated, shown = tried
    assert "stage       status    seconds  result" in ran.stdout and "code-finetune-tiny v1" in ran.stdout
    assert generated.stdout.strip()  # an answer, or "(empty)": never a bare blank line
    assert json.loads(shown.stdout.split("\n\n", 1)[0])["method"] == "lora"


def test_what_you_get_loads_the_model_from_the_shell_and_from_python(tried, env, cwd):
    for line in shell_lines("What you get"):
        assert run(line, env, cwd).stdout.strip()
    (snippet,) = blocks(section("What you get"), "python")
    assert 'mlflow.set_tracking_uri("sqlite:///mlflow/mlflow.db")' in snippet  # the project's default store
    here = snippet.replace("sqlite:///mlflow/mlflow.db", env["MLFLOW_TRACKING_URI"])
    done = subprocess.run(
        [sys.executable, "-c", here], env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_running_one_stage_commands_work_on_the_tiny_profile(tried, env, cwd):
    for line in shell_lines("Running one stage"):
        run(line, env, cwd)
