"""Every shipped profile validates; bad configs fail with exit code 2 and a message naming file, key, line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from pipeline_config import ConfigError, load_config
from tests.conftest import REPO

PROFILES = sorted((REPO / "pipeline_config").glob("*.yaml"))
VALID = """\
name: t
model:
  scratch:
    vocab_size: 512
train:
  method: lora
  lora:
    r: 8
"""


def test_there_are_profiles():
    names = {p.stem for p in PROFILES}
    assert {"offline", "tiny"} <= names


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_validates(path: Path):
    cfg = load_config(path)
    assert cfg.name
    assert path.read_text().startswith("#"), "each profile opens with a comment giving its command"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        (VALID.replace("    r: 8", "    r: 0"), "train.lora.r, line 8: Input should be greater than 0 (got 0)"),
        (VALID.replace("    r: 8", "    rank: 8"), "train.lora.rank, line 8: unknown key"),
        (VALID.replace("    vocab_size: 512", "    vocab_size: lots"), "model.scratch.vocab_size, line 4"),
        (VALID + "tokenize:\n  max_length: 100000\n", "exceeds model.scratch.max_position_embeddings"),
        (VALID.replace("  method: lora", "  method: qlora"), "train.method 'qlora' needs a train.quantization"),
        (VALID.replace("name: t\n", ""), "name: required key is missing"),
        (VALID + "bogus: 1\n", "bogus, line 9: unknown key"),
    ],
)
def test_invalid_config_names_key_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_valid_fixture_is_valid(tmp_path):
    assert load_config(write(tmp_path, VALID)).train.lora.r == 8


def test_cli_exit_code_2_and_nothing_written(tmp_path, capsys):
    workspace = tmp_path / "ws"
    path = write(tmp_path, f"workspace: {workspace}\n" + VALID.replace("    r: 8", "    r: -1"))
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.lora.r" in err and str(path) in err and "Traceback" not in err
    assert not workspace.exists()


def test_cli_missing_config_file(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_cli_unknown_stage(tmp_path, capsys):
    assert main(["run", "--config", str(REPO / "pipeline_config/tiny.yaml"), "--force", "trian"]) == 2
    assert "--force: unknown stage(s) trian" in capsys.readouterr().err


def test_console_script_reports_bad_config_without_traceback(tmp_path):
    path = write(tmp_path, VALID + "bogus: 1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "finetune"), "run", "--config", str(path)],
        capture_output=True, text=True, env={**os.environ}, timeout=120,
    )
    assert proc.returncode == 2
    assert "bogus, line 9: unknown key" in proc.stderr and "Traceback" not in proc.stderr
