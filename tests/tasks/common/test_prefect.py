"""Prefect retries a stage only when another attempt can help: a teacher that stayed busy, a dropped
connection; never a 401 or a bad config."""

from __future__ import annotations

import pytest
import requests

from pipeline_config import load_config
from tasks.common.prefect import is_transient, stage_task
from tasks.common.stage import StageResult, StageSpec
from tasks.common.teacher import TeacherError


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (TeacherError("HTTP 401: bad key"), False),
        (TeacherError("gave up after 4 attempts; last error: HTTP 503", transient=True), True),
        (requests.ConnectionError("reset"), True),
        (ValueError("train.lora.r must be > 0"), False),
    ],
)
def test_is_transient(error, transient):
    assert is_transient(error) is transient


@pytest.mark.parametrize(
    ("error", "attempts"), [(TeacherError("HTTP 401"), 1), (ConnectionError("reset"), 3)]
)
def test_stage_task_retries_only_transient_errors(prefect_server, tmp_path, error, attempts):
    calls: list[int] = []

    def run(cfg, inputs, out_dir, context) -> StageResult:
        calls.append(1)
        raise error

    spec = StageSpec("clean", run, "tasks.clean", sections=("clean",), retries=2)
    cfg = load_config("pipeline_config/tiny.yaml").model_copy(update={"workspace": str(tmp_path)})
    task = stage_task(spec, retry_delay_seconds=0)
    with pytest.raises(type(error)):
        task(cfg, {})
    assert len(calls) == attempts
