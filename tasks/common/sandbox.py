"""Run untrusted Python (model-generated code checked against tests) in a contained child process.

`run_python(code)` runs `code` as /tmp/work/main.py with this interpreter and passes when it exits 0;
`run_many(codes)` runs samples concurrently, in order. A backend contains them; `resolve("auto")` takes the
first of BACKENDS this machine can run, checked once per process by a probe sample:

- root: the caller is root. `unshare` makes mount, PID, network and IPC namespaces; the sample runs as a
  fresh uid drawn from UID_RANGE, so RLIMIT_NPROC counts that sample alone and it owns no host file.
- userns: any user, where unprivileged user namespaces are allowed (most current distributions; not in a
  container started with the default seccomp profile). The same namespaces inside a new user namespace in
  which the caller is root; the sample keeps the caller's uid with no capability. The kernel counts
  RLIMIT_NPROC per user namespace (since 5.14), so the limit does not count the user's other processes.
- none: only if asked for (`sandbox.backend: none`): rlimits, a temporary directory, a scrubbed environment;
  the sample can use the network and write the user's files. Logged as a warning, and named in the reports.

Both isolating backends give the sample the same view (tasks/common/sandbox_init.py, its process 1): no
network, not even loopback; its own /proc; a private size-capped /tmp (also /var/tmp, /dev/shm, /run/lock);
the caller's home and folders others cannot enter hidden; every other mount read-only. When process 1 exits
the kernel kills everything left in the PID namespace, setsid() escapees too; at `wall_s` the whole group is
SIGKILLed. A sample that leaves processes running when it exits (what a fork bomb that swallows its failed
forks does) is `failed`. Samples start with `-I -S` and the interpreter's site-packages on sys.path: no .pth
file runs (an editable install's finder alone costs ~30 ms a sample). Gaps: a sample can read world-readable
files outside the caller's home (the system, the interpreter); `-I` ignores PYTHONHASHSEED.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import pwd
import random
import select
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from subprocess import DEVNULL, Popen
from typing import IO, Literal

from tasks.common.processes import children, kill_uid, wait_ended
from tasks.common.scoped import StageSetting

Status = Literal["passed", "failed", "timeout", "killed"]
"""passed: exit 0, nothing left running; failed: nonzero exit (exception, assertion, MemoryError, file too
large) or processes left running; timeout: still running at `wall_s`, killed by us; killed: ended by a signal
(the CPU limit's SIGXCPU, a crash) -- as in a shell, exit codes above 128 read as signals."""

Backend = Literal["root", "userns", "none"]
BACKENDS: tuple[Backend, ...] = ("root", "userns")  # what "auto" tries, in order; "none" only when asked
CHOICES = ("auto", "root", "userns", "none")  # sandbox.backend in the config

# Each root-backend sample gets a uid drawn at random from a range no account uses: with 2^30 of them two
# samples (even of two pipelines) do not share one, which matters as RLIMIT_NPROC counts per uid and the
# sweep after a timeout kills every process of the uid.
UID_RANGE = range(1 << 20, 1 << 30)
INIT = str(Path(__file__).with_name("sandbox_init.py"))
_WORK = "/tmp/work"  # inside the sample's private /tmp
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
# unshare itself and process 1 live in the sample's user namespace and count towards its RLIMIT_NPROC
_USERNS_OVERHEAD = 2
_NAMESPACES = ("--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--net", "--ipc")
log = logging.getLogger(__name__)

# The sample's interpreter runs this, then main.py as __main__: site-packages on sys.path without the .pth
# files, and a note on fd 3 (read by process 1) whenever a fork, spawn or thread is refused for the process
# limit, which a sample that catches the error would otherwise hide. Its names are deleted before main.py.
BOOT = """import os, sys, _posixsubprocess, _thread
sys.path += sys.argv[1].split(os.pathsep)
sys.argv[:] = ["main.py"]
__file__ = "main.py"
def _noting_refusals(start, write=os.write):
    def noted(*args, **kwargs):
        try:
            return start(*args, **kwargs)
        except (BlockingIOError, RuntimeError) as e:
            if isinstance(e, BlockingIOError) or "can't start new thread" in str(e):
                try:
                    write(3, b"!")
                except OSError:
                    pass
            raise
    return noted
for _module, _name in ((os, "fork"), (os, "forkpty"), (os, "posix_spawn"), (os, "posix_spawnp"),
                       (_posixsubprocess, "fork_exec"), (_thread, "start_new_thread")):
    if hasattr(_module, _name):
        setattr(_module, _name, _noting_refusals(getattr(_module, _name)))
del os, sys, _posixsubprocess, _thread, _noting_refusals, _module, _name
exec(compile(open(__file__, "rb").read(), __file__, "exec"))
"""


class SandboxUnavailable(RuntimeError):
    """No backend that was asked for can isolate code on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024  # address space, not resident memory (the bare interpreter maps ~15 MB)
    max_processes: int = 32  # processes plus threads of the sample
    max_file_mb: int = 16  # per file written, stdout and stderr included
    max_output_chars: int = 20_000  # kept of stdout and of stderr each
    disk_mb: int = 64  # the sample's private /tmp (its cwd and HOME), a tmpfs: memory, in fact

    def __post_init__(self) -> None:
        if bad := {name: value for name, value in vars(self).items() if value <= 0}:
            raise ValueError(f"Limits must be > 0, got {bad}")


@dataclass
class Result:
    status: Status
    returncode: int  # 128 + N: ended by signal N (the shell convention, whatever the backend)
    stdout: str
    stderr: str
    seconds: float
    backend: Backend

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def isolated(self) -> bool:
        return self.backend != "none"


def run_python(code: str, limits: Limits = Limits(), backend: str | None = None) -> Result:
    """Run `code` as a script in the sandbox; raises SandboxUnavailable if `backend` cannot run here."""
    return _run(code, limits, resolve(backend))


def run_many(
    codes: Sequence[str], limits: Limits = Limits(), workers: int = 4, backend: str | None = None
) -> list[Result]:
    """`run_python` over `codes` with `workers` samples at a time (threads waiting on processes); in order."""
    chosen = resolve(backend)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda code: _run(code, limits, chosen), codes))


# The backend the running stage's config asks for (sandbox.backend), for samples that run deep below it
# (verification inside the generators' filters, pass@k inside the evaluation). An explicit backend wins.
_STAGE_BACKEND: StageSetting[str] = StageSetting("sandbox_backend", "auto")


def stage_backend(requested: str) -> AbstractContextManager[None]:
    return _STAGE_BACKEND.scope(requested)


def can_isolate() -> bool:
    """Whether some backend isolates here (what tests that need one skip on)."""
    try:
        resolve("auto")
    except SandboxUnavailable:
        return False
    return True


def requested_backend() -> str:
    """What the running stage asks for (auto outside a stage)."""
    return _STAGE_BACKEND.get()


def resolve(requested: str | None = None) -> Backend:
    """The backend that will run samples for `requested` (one of CHOICES; None: the stage's, else auto), or
    SandboxUnavailable saying why none can and what to do."""
    requested = requested or _STAGE_BACKEND.get()
    if requested not in CHOICES:
        raise ValueError(f"unknown sandbox backend {requested!r}; choose one of {', '.join(CHOICES)}")
    if requested == "none":
        _warn_unisolated()
        return "none"
    tried = BACKENDS if requested == "auto" else (requested,)
    problems = {}
    for backend in tried:
        if (problem := _probe(backend)) is None:
            return backend
        problems[backend] = problem
    raise SandboxUnavailable(_explain(problems))


def describe(backend: Backend) -> str:
    """One line for reports: what contains the samples."""
    view = "mount, pid, net and ipc namespaces, read-only host, private /tmp, rlimits (cpu, as, fsize, nproc)"
    return {
        "root": f"root: {view}, a fresh uid per sample",
        "userns": f"userns: an unprivileged user namespace, {view}, no capabilities",
        "none": "none: NOT ISOLATED (sandbox.backend: none): rlimits cpu, as, fsize only",
    }[backend]


@cache
def _warn_unisolated() -> None:
    log.warning(
        "sandbox.backend is none: generated code runs WITHOUT isolation (network, your files, your "
        "processes); the reports and the registered model say so"
    )


# One short sample proves every layer at once: no network, a read-only host, and (root) another uid.
_PROBE = """import errno, os, socket
assert os.statvfs("/").f_flag & os.ST_RDONLY, "/ is writable"
assert {root} or os.getuid() != 0, "still root"
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError as e:
    assert e.errno == errno.ENETUNREACH, e
"""


@cache
def _probe(backend: Backend) -> str | None:
    """None when `backend` isolates here, else why not."""
    if backend == "root" and os.geteuid() != 0:
        return "not running as root"
    if shutil.which("unshare") is None:
        return "util-linux's unshare is not installed"
    try:
        result = _run(_PROBE.format(root=backend == "userns"), Limits(wall_s=30), backend)
    except RuntimeError as e:
        return str(e)
    return None if result.passed else f"probe {result.status}: {result.stderr.strip()[-500:]}"


def _explain(problems: dict[str, str]) -> str:
    why = "; ".join(f"{backend}: {problem}" for backend, problem in problems.items())
    return (
        f"cannot isolate untrusted code on this machine ({why}). {_userns_fix()} Or run generated code "
        "without isolation (rlimits only: it can reach the network and your files) with "
        "`sandbox.backend: none` in the config; the reports and the registered model then say so."
    )


def _userns_fix() -> str:
    """What would let the userns backend run here, from the settings that commonly forbid it."""

    def sysctl(name: str) -> str | None:
        with suppress(OSError):
            return Path("/proc/sys", *name.split(".")).read_text().strip()
        return None

    if shutil.which("unshare") is None:
        return "Install util-linux (it provides unshare)."
    if sysctl("kernel.unprivileged_userns_clone") == "0":
        return "Allow unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1."
    if sysctl("user.max_user_namespaces") == "0":
        return "Allow user namespaces: sysctl -w user.max_user_namespaces=15000."
    if sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return (
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile that allows userns."
        )
    if (
        Path("/.dockerenv").exists()
        or Path("/run/.containerenv").exists()
        or "KUBERNETES_SERVICE_HOST" in os.environ
    ):
        return (
            "In a container, allow user namespaces: docker run --security-opt seccomp=unconfined "
            "(Kubernetes: securityContext.seccompProfile.type Unconfined, as ops/k8s/job-template.json "
            "sets); see docs/scaling.md."
        )
    return "Check that unprivileged user namespaces are allowed (unshare --user --map-root-user true)."


def _run(code: str, limits: Limits, backend: Backend) -> Result:
    stage = Path(tempfile.mkdtemp(prefix="sandbox-"))  # none: the cwd; else: where /tmp is staged
    (stage / "main.py").write_text(code, encoding="utf-8")
    uid = random.choice(UID_RANGE) if backend == "root" else None
    spec = _spec(limits, backend, stage, uid)
    command = [sys.executable, "-I", "-S", INIT, marshal.dumps(spec).hex()]
    if backend == "userns":
        command = ["unshare", "--user", "--map-root-user", *_NAMESPACES, "--", *command]
    elif backend == "root":
        command = ["unshare", *_NAMESPACES, "--", *command]
    report_fd, status_fd = os.pipe()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = Popen(
                [*command, str(status_fd)], cwd=stage, env=spec["env"], stdin=DEVNULL, stdout=out, stderr=err,
                start_new_session=True, pass_fds=(status_fd,),
            )  # fmt: skip
            os.close(status_fd)
            # Process 1 reports the moment the sample ends (or the pipe closes if it died): waking on that
            # beats Popen.wait(timeout), whose polling backoff added ~25 ms to a 35 ms sample.
            timed_out = not select.select([report_fd], [], [], limits.wall_s)[0]
            if timed_out:
                inits = children(proc.pid)  # process 1 of the namespace, seen from here
                with suppress(ProcessLookupError):  # not reaped yet: its pid (= the group id) is still ours
                    os.killpg(proc.pid, signal.SIGKILL)
                wait_ended(inits)  # it dies of unshare's death; the kernel empties its namespace first
            proc.wait()
            seconds = time.monotonic() - start
            with suppress(ProcessLookupError):  # none: whatever the sample started in its group
                os.killpg(proc.pid, signal.SIGKILL)
            report = os.read(report_fd, 4096)
            stdout, stderr = _read(out, limits.max_output_chars), _read(err, limits.max_output_chars)
        if uid is not None and (timed_out or not report):  # else the namespace ended with its process 1
            kill_uid(uid)
    finally:
        os.close(report_fd)
        shutil.rmtree(stage)
    if timed_out:
        return Result("timeout", 128 + signal.SIGKILL, stdout, stderr, round(seconds, 3), backend)
    if not report:
        raise RuntimeError(f"the {backend} sandbox could not start a sample: {stderr.strip()[-800:]}")
    ended = json.loads(report)
    rc, left, refused = ended["returncode"], ended["left_running"], ended["refused"]
    status: Status = "passed" if rc == 0 else "killed" if rc > 128 else "failed"
    if status == "passed" and (left or refused):
        status = "failed"  # a pass is the wrong verdict for code that ran into the process limit
        if refused:
            stderr += (
                f"\n[sandbox] the process limit ({limits.max_processes}) refused {refused} fork(s)/thread(s)"
            )
        if left:
            stderr += f"\n[sandbox] the sample exited leaving {left} processes running"
    return Result(status, rc, stdout, stderr, round(seconds, 3), backend)


def _spec(limits: Limits, backend: Backend, stage: Path, uid: int | None) -> dict:
    """What process 1 needs (tasks/common/sandbox_init.py): the view to build and the sample to start."""
    isolated = backend != "none"
    rlimits = {
        "RLIMIT_CPU": (limits.cpu_s, limits.cpu_s + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        "RLIMIT_AS": (limits.memory_mb << 20,) * 2,
        "RLIMIT_FSIZE": (limits.max_file_mb << 20,) * 2,  # stdout and stderr are files: capped too
        "RLIMIT_CORE": (0, 0),
    }
    if isolated:
        rlimits["RLIMIT_NPROC"] = (
            limits.max_processes + (_USERNS_OVERHEAD if backend == "userns" else 0),
        ) * 2
    work = _WORK if isolated else str(stage)
    site = _site_packages()
    hide, bind_back = _hidden() if isolated else ([], [])
    if isolated:
        (stage / "tmp").mkdir()
    return {
        "isolated": isolated, "stage": str(stage), "uid": uid, "disk_mb": limits.disk_mb, "rlimits": rlimits,
        "hide": hide, "bind_back": bind_back, "cwd": work, "env": {**_ENV, "HOME": work, "TMPDIR": work},
        "argv": [sys.executable, "-I", "-S", "-u", "-c", BOOT, os.pathsep.join(site)],
    }  # fmt: skip


@cache
def _site_packages() -> list[str]:
    return sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})


@cache
def _hidden() -> tuple[list[str], list[str]]:
    """Folders to cover with an empty tmpfs (the caller's home; ancestors of the interpreter others cannot
    enter, such as a pyenv under /root) and the installs under them (or under /tmp) to bind back."""
    installs = sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})
    closed = {str(a) for i in installs for a in Path(i).parents[:-1] if not os.stat(a).st_mode & 0o001}
    homes = {os.path.realpath(h) for h in (os.environ.get("HOME"), pwd.getpwuid(os.getuid()).pw_dir) if h}
    covered = closed | {h for h in homes if h != "/" and os.path.isdir(h) and not h.startswith("/tmp")}
    tops = [c for c in sorted(covered) if not any(c.startswith(o + "/") for o in covered | {"/tmp"})]
    bind_back = [i for i in installs if any(i == t or i.startswith(t + "/") for t in [*tops, "/tmp"])]
    return tops, bind_back


def _read(f: IO[bytes], max_chars: int) -> str:
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    text = f.read(max_chars * 4).decode("utf-8", errors="replace")  # a UTF-8 char is at most 4 bytes
    if size > max_chars * 4 or len(text) > max_chars:
        text = text[:max_chars] + f"\n[... truncated: {size} bytes in all]"
    return text
