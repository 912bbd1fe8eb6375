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
        (
            VALID.replace("    r: 8", "    r: 0"),
            "train.lora.r, line 8: Input should be greater than 0 (got 0)",
        ),
        (VALID.replace("    r: 8", "    rank: 8"), "train.lora.rank, line 8: unknown key"),
        (VALID.replace("    vocab_size: 512", "    vocab_size: lots"), "model.scratch.vocab_size, line 4"),
        (VALID + "tokenize:\n  max_length: 100000\n", "exceeds model.scratch.max_position_embeddings"),
        (
            VALID.replace("  method: lora", "  method: qlora"),
            "train.method 'qlora' needs a train.quantization",
        ),
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
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "bogus, line 9: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_seed_recipes_are_reproduced():
    """The facts each reference recipe (shared seeds/README) fixes, read back from our profiles."""
    codegen = load_config(REPO / "pipeline_config/codegen350m_qlora.yaml")
    assert codegen.model.name_or_path == "Salesforce/codegen-350M-mono"
    assert (
        codegen.train.method,
        codegen.train.lora.r,
        codegen.train.lora.alpha,
        codegen.train.lora.dropout,
    ) == ("qlora", 64, 16, 0.1)
    q = codegen.train.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "float16")
    assert (codegen.tokenize.packing, codegen.tokenize.max_length, codegen.tokenize.template) == (
        True,
        2048,
        "codegen_task",
    )

    alpaca = load_config(REPO / "pipeline_config/code_alpaca_full.yaml")
    assert (
        alpaca.train.method == "full" and alpaca.train.learning_rate == 2e-5 and alpaca.train.num_epochs == 3
    )
    assert (alpaca.tokenize.max_length, alpaca.train.lr_scheduler, alpaca.train.warmup_ratio) == (
        512,
        "cosine",
        0.03,
    )
    assert alpaca.synthesize.self_instruct.enabled and alpaca.synthesize.teacher.backend == "openai"

    phi = load_config(REPO / "pipeline_config/phi3_mini_qlora.yaml")
    assert (phi.train.lora.r, phi.train.lora.alpha, phi.train.lora.dropout) == (16, 16, 0.05)
    assert sorted(phi.train.lora.target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert (phi.train.optim, phi.train.learning_rate, phi.train.num_epochs, phi.train.eval_steps) == (
        "paged_adamw_8bit",
        1e-4,
        3,
        100,
    )
    assert phi.evaluate.max_samples == 500 and phi.train.quantization.compute_dtype == "bfloat16"

    star = load_config(REPO / "pipeline_config/starcoderbase1b_fim.yaml")
    assert (star.train.lora.r, star.train.lora.alpha) == (8, 32)
    assert star.train.lora.target_modules == ["c_proj", "c_attn", "q_attn", "c_fc"]
    assert star.tokenize.fim_rate > 0 and star.tokenize.packing and star.scrape.package == "sklearn"

    pythia = load_config(REPO / "pipeline_config/pythia70m_full.yaml")
    assert (pythia.train.method, pythia.train.optim, pythia.train.learning_rate) == (
        "full",
        "adafactor",
        1e-5,
    )
    assert (pythia.train.batch_size, pythia.train.grad_accum, pythia.train.eval_steps) == (1, 4, 120)
