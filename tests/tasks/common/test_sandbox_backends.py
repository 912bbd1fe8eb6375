"""Which backend runs the samples: the one this machine and user can isolate with, forced ones, and the error
that names the fix where none can (and the explicit opt-out)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from tasks.common import sandbox
from tasks.common.sandbox import Limits, run_many, run_python
from tests.conftest import REPO
from tests.tasks.common.sandboxing import (
    DRIVER,
    FAST,
    MANY_DRIVER,
    NOBODY,
    SYSTEM_PYTHON,
    as_nobody,
    can_drive_nobody,
)

pytestmark = pytest.mark.usefixtures("nothing_left_running")


def test_isolation_is_available_here():
    backend = sandbox.resolve("auto")
    assert backend == ("root" if os.geteuid() == 0 else "userns"), sandbox.describe(backend)
    if can_drive_nobody():  # the backend an ordinary user gets here
        assert as_nobody("print(1)", backend="auto").backend == "userns"


@pytest.mark.skipif(os.geteuid() != 0, reason="forces the userns backend as root, as a container's root does")
def test_root_can_force_the_userns_backend():
    code = "import os\nprint(os.getuid())\nopen('/etc/sandbox-test', 'w')"
    result = run_python(code, FAST, backend="userns")
    assert (result.status, result.stdout, result.backend) == ("failed", "0\n", "userns")
    assert "Read-only file system" in result.stderr and not Path("/etc/sandbox-test").exists()


@pytest.mark.parametrize("backend", ["root", "userns"])
def test_humaneval_canonical_solutions_pass_and_a_wrong_one_fails(backend: str):
    # what pass@k and synthesis verification rely on: an honest program passes, a wrong one fails
    from tasks.common.benchmarks import humaneval_problems, program

    problems = humaneval_problems()
    codes = [program(p, p["canonical_solution"]) for p in problems]
    codes.append(program(problems[0], "    return None\n"))
    if backend == "root" and os.geteuid() != 0:
        pytest.skip("the root backend needs root")
    if backend == "userns" and can_drive_nobody():  # as an ordinary user
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-c"]
        proc = subprocess.run(
            [*cmd, MANY_DRIVER, str(REPO)], input=json.dumps(codes), cwd="/", capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        statuses = json.loads(proc.stdout)
    else:
        statuses = [r.status for r in run_many(codes, Limits(), workers=2, backend=backend)]
    assert statuses[:-1] == ["passed"] * len(problems) and statuses[-1] == "failed"


def test_refuses_to_run_unisolated_unless_asked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox, "_probe", lambda backend: f"no {backend} in this test")
    with pytest.raises(
        sandbox.SandboxUnavailable, match="root: no root in this test; userns: no userns"
    ) as e:
        run_python("print(1)", FAST)
    assert "`sandbox.backend: none`" in str(e.value)
    result = run_python("import os\nprint(os.getcwd() == os.environ['HOME'])", FAST, backend="none")
    assert (result.status, result.stdout, result.isolated, result.backend) == (
        "passed",
        "True\n",
        False,
        "none",
    )


@pytest.mark.skipif(not can_drive_nobody(), reason="needs root to set up a namespace without user namespaces")
def test_without_user_namespaces_the_error_names_the_fix():
    # Inside a user namespace whose limit on nested ones is 0 (as user.max_user_namespaces=0 does to a whole
    # machine), as its root (the root of a locked-down container): neither backend can isolate.
    args = json.dumps(["print(1)", dataclasses.asdict(FAST), "auto"])
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    cmd = ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh", SYSTEM_PYTHON, "-c", DRIVER]
    proc = subprocess.run([*cmd, str(REPO), args], cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "SandboxUnavailable: cannot isolate untrusted code" in proc.stderr
    assert (
        "sysctl -w user.max_user_namespaces=15000" in proc.stderr and "sandbox.backend: none" in proc.stderr
    )
