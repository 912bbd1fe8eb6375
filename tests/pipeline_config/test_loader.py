"""The loader: bad configs fail with exit code 2 and a message naming file, key, line; every problem with the
file is a ConfigError naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_config import ConfigError, load_config
from tests.pipeline_config.helpers import REPO, VALID, raises_config_error, with_source, write


def main(argv: list[str]) -> int:
    # imported here so that the schema tests run even when flows/ does not import
    from flows.cli import main as cli_main

    return cli_main(argv)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            VALID.replace("    r: 8", "    r: 0"),
            "train.lora.r, line 9: Input should be greater than 0 (got 0)",
        ),
        (VALID.replace("    r: 8", "    rank: 8"), "train.lora.rank, line 9: unknown key"),
        (VALID.replace("    vocab_size: 512", "    vocab_size: lots"), "model.source.vocab_size, line 5"),
        (VALID + "tokenize:\n  max_length: 100000\n", "exceeds model.source.max_position_embeddings"),
        (
            VALID.replace("  method: lora", "  method: qlora"),
            "train.method 'qlora' needs a train.quantization",
        ),
        (VALID.replace("name: t\n", ""), "name: required key is missing"),
        (VALID + "bogus: 1\n", "bogus, line 10: unknown key"),
    ],
)
def test_invalid_config_names_key_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


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
    assert "bogus, line 10: unknown key" in proc.stderr and "Traceback" not in proc.stderr


def test_binary_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert "not a text file (byte 0x89 at offset 0 is not UTF-8)" in raises_config_error(path)


def test_nul_byte(tmp_path):
    assert "not a text file (NUL byte at offset 7)" in raises_config_error(write(tmp_path, "name: t\0\n"))


def test_oversized_file(tmp_path):
    path = write(tmp_path, "# " + "x" * (2 << 20) + "\n")
    assert "not a config file (larger than 1024 KiB)" in raises_config_error(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: t\nname: u\n", "name: duplicate key, at lines 1 and 2"),
        (VALID + "  lora: {r: 2}\n", "train.lora: duplicate key, at lines 8 and 10"),
        (
            VALID.replace("    r: 8", "    r: 8\n    alpha: 4\n    r: 16"),
            "train.lora.r: duplicate key, at lines 9 and 11",
        ),
        (with_source("{kind: hub, id: a, id: b}"), "model.source.id: duplicate key, at lines 3 and 3"),
    ],
)
def test_duplicate_keys(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_merge_key_may_be_overridden(tmp_path):
    text = VALID.replace("    r: 8", "    <<: {r: 2, alpha: 4}\n    r: 8")
    lora = load_config(write(tmp_path, text)).train.lora
    assert (lora.r, lora.alpha) == (8, 4)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: &x [*x]\n", "a.0, line 1: self-referencing alias"),
        ("name: &n {a: *n}\n", "name.a, line 1: self-referencing alias"),
        (
            with_source("&s {kind: hub, id: gpt2, extra: [1, *s]}"),
            "model.source.extra.1, line 3: self-referencing",
        ),
        ("&top {name: t, model: *top}\n", "model, line 1: self-referencing alias"),
    ],
)
def test_self_referencing_alias(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_alias_bomb_and_deep_nesting(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert "aliases expand to more than 100000 values" in raises_config_error(
        write(tmp_path, "\n".join(levels))
    )
    deep = "a: " + "[" * 20000 + "]" * 20000 + "\n"
    assert "not valid YAML: nested too deeply" in raises_config_error(write(tmp_path, deep))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty config file"),
        ("# just a comment\n", "empty config file"),
        (
            "- name: t\n",
            "expected a mapping of sections (name, model, train, ...) at the top level, got list",
        ),
        ("just a string\n", "at the top level, got str"),
        ("name: t\nmodel: [\n", "not valid YAML"),
        ("---\nname: t\n---\nname: u\n", "not valid YAML: expected a single document"),
    ],
)
def test_unusable_files(tmp_path, text, expected):
    assert expected in raises_config_error(write(tmp_path, text))


def test_directory_and_missing_file(tmp_path):
    assert raises_config_error(tmp_path) == f"{tmp_path}: is a directory, not a config file"
    assert raises_config_error(tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"


def test_loading_a_config_does_not_import_transformers():
    code = (
        "import sys; from pipeline_config import load_config; "
        f"load_config({str(REPO / 'pipeline_config/tiny.yaml')!r}); "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules, 'imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
