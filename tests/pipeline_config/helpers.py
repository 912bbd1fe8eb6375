"""What the config tests share: a valid profile to vary, and the ConfigError a variation gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
PROFILES = sorted((REPO / "pipeline_config").glob("*.yaml"))
VALID = """\
name: t
model:
  source:
    kind: scratch
    vocab_size: 512
train:
  method: lora
  lora:
    r: 8
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def raises_config_error(path: Path) -> str:
    """The ConfigError's message; another exception (RecursionError, UnicodeDecodeError) fails the test."""
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)) or message == f"config file not found: {path}"
    assert "Traceback" not in message
    return message


def with_source(source: str, rest: str = "") -> str:
    return f"name: t\nmodel:\n  source: {source}\n{rest}"
