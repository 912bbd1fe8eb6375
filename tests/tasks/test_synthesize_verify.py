"""tasks.synthesize.verify: a teacher's solution run against its own tests in the sandbox, each outcome
classified (passed, assertion, crash, syntax error, timeout, no tests), in order and in parallel, and never
unisolated unless the stage asks."""

from __future__ import annotations

import pytest
from synthesize_fakes import VERIFY

from pipeline_config.schema import VerifyConfig
from tasks.common.sandbox import Result
from tasks.synthesize.verify import classify, verify

ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize(
    ("solution", "tests", "kind"),
    [
        (ADD, "assert add(2, 3) == 5", "passed"),
        (ADD, "assert add(2, 2) == 5", "assertion"),
        (ADD, "assert add(1, 1) == 2\nadd(1)", "crash"),  # TypeError
        ("def add(a, b):\n    return a / 0\n", "assert add(1, 2) == 3", "crash"),
        ("def add(a, b)\n    return a + b\n", "assert add(1, 2) == 3", "syntax_error"),
        (ADD, "assert add(1, 2) ==", "syntax_error"),
        (ADD, "exec('def f(:')\nassert add(1, 2) == 3", "syntax_error"),  # raised while running
        ("def add(a, b):\n    while True:\n        pass\n", "assert add(1, 2) == 3", "timeout"),
        (ADD, "", "no_tests"),
        (ADD, "print(add(1, 2))", "no_tests"),
        (ADD, "assert True\nassert 1 + 1 == 2", "no_tests"),  # checks nothing of the solution
        (ADD, "def add(a, b):\n    return 3\n\nassert add(1, 2) == 3", "no_tests"),  # tests its own copy
    ],
)
def test_verify_classifies(solution: str, tests: str, kind: str) -> None:
    cfg = VERIFY.model_copy(update={"timeout_s": 2.0, "cpu_s": 2})
    (verdict,) = verify([(solution, tests)], cfg)
    assert verdict.kind == kind, verdict.detail
    assert verdict.passed == (kind == "passed")


def test_classify_cpu_limit_is_a_timeout_and_other_signals_crash() -> None:
    assert classify(Result("killed", 128 + 24, "", "", 1.0, True)).kind == "timeout"  # SIGXCPU
    assert classify(Result("killed", 128 + 9, "", "", 1.0, True)).kind == "crash"
    assert classify(Result("failed", 1, "", "Traceback...\nMemoryError", 1.0, True)).kind == "crash"


def test_verify_runs_in_order_and_in_parallel() -> None:
    tasks = [(ADD, f"assert add({i}, 1) == {i + 1 if i % 2 else 0}") for i in range(6)]
    kinds = [v.kind for v in verify(tasks, VERIFY)]
    assert kinds == ["assertion", "passed", "assertion", "passed", "assertion", "passed"]


def test_verify_refuses_without_isolation_unless_asked(monkeypatch) -> None:
    from tasks.common import sandbox

    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} here")
    with pytest.raises(sandbox.SandboxUnavailable, match="sandbox.backend: none"):
        verify([(ADD, "assert add(1, 2) == 3")], VerifyConfig())
    # tasks that never reach the sandbox need no isolation
    assert [v.kind for v in verify([(ADD, "")], VerifyConfig())] == ["no_tests"]
    # the stage's explicit opt-in runs them, unisolated
    with sandbox.stage_backend("none"):
        assert [v.kind for v in verify([(ADD, "assert add(1, 2) == 3")], VerifyConfig())] == ["passed"]
