"""Fixtures of the tests of tasks/common; the teacher tests' fakes and builders are in teacher_fakes.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def sleeps() -> list[float]:
    """Where a teacher's injected sleep records its waits: no test waits for a backoff."""
    return []


@pytest.fixture(autouse=True)
def no_teacher_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher tests' key variable is unset unless a test sets it."""
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
