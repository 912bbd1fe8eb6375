"""Fixtures of the tests of tasks/common; the teacher tests' fakes and builders are in teacher_fakes.py, the
sandbox tests' helpers in sandboxing.py."""

from __future__ import annotations

import os

import pytest

from tasks.common.sandbox import run_python
from tests.tasks.common.sandboxing import (
    FAST,
    SYSTEM_PYTHON,
    Run,
    as_nobody,
    can_drive_nobody,
    foreign_processes,
)


@pytest.fixture
def sleeps() -> list[float]:
    """Where a teacher's injected sleep records its waits: no test waits for a backoff."""
    return []


@pytest.fixture(autouse=True)
def no_teacher_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher tests' key variable is unset unless a test sets it."""
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)


@pytest.fixture(params=["root", "userns"])
def run(request: pytest.FixtureRequest) -> Run:
    """run(code, limits) under one backend, as root (root) or as an ordinary user (userns)."""
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("the root backend needs root")
        return lambda code, limits=FAST: run_python(code, limits, backend="root")
    if can_drive_nobody():
        return as_nobody
    if os.geteuid() == 0:
        pytest.skip(f"no {SYSTEM_PYTHON} or setpriv to run the sandbox as an ordinary user")
    return lambda code, limits=FAST: run_python(code, limits, backend="userns")


@pytest.fixture
def nothing_left_running():
    """Fails a test whose sample left processes behind (in another PID namespace than ours)."""
    before = foreign_processes()
    yield
    assert foreign_processes() <= before, "the sample left processes behind"
