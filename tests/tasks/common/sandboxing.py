"""What the sandbox tests share: small limits, a way to run samples as the ordinary user nobody, and the
processes of other PID namespaces (every sample's), to check that none outlives its test."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from tasks.common.sandbox import Limits, Result
from tests.conftest import REPO

FAST = Limits(wall_s=5, memory_mb=512, max_processes=16, max_file_mb=2, max_output_chars=1000, disk_mb=8)
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
# Run as nobody: import the sandbox from the repo (standard library only) and print the Result as JSON.
DRIVER = """import dataclasses, json, sys
sys.path.insert(0, sys.argv[1])
from tasks.common.sandbox import Limits, run_python
code, limits, backend = json.loads(sys.argv[2])
print(json.dumps(dataclasses.asdict(run_python(code, Limits(**limits), backend=backend))))
"""
# The same for many samples at once, read from stdin (164 programs exceed what argv may carry).
MANY_DRIVER = """import json, sys
sys.path.insert(0, sys.argv[1])
from tasks.common.sandbox import Limits, run_many
codes = json.load(sys.stdin)
print(json.dumps([r.status for r in run_many(codes, Limits(), workers=2, backend="userns")]))
"""
Run = Callable[..., Result]


def as_nobody(code: str, limits: Limits = FAST, backend: str = "userns") -> Result:
    """`run_python` in a process of the unprivileged user nobody, with the environment of this one."""
    args = json.dumps([code, dataclasses.asdict(limits), backend])
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON, "-c", DRIVER]
    proc = subprocess.run([*cmd, str(REPO), args], cwd="/", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return Result(**json.loads(proc.stdout))


def can_drive_nobody() -> bool:
    return os.geteuid() == 0 and Path(SYSTEM_PYTHON).is_file() and shutil.which("setpriv") is not None


def foreign_processes() -> set[int]:
    """Live processes in another PID namespace than ours (every sample's), read straight from /proc."""
    ours, found = os.readlink("/proc/self/ns/pid"), set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            state = Path("/proc", name, "stat").read_text().rsplit(")", 1)[1].split()[0]
            if os.readlink(f"/proc/{name}/ns/pid") != ours and state != "Z":
                found.add(int(name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):  # exited while we looked
            continue
    return found
