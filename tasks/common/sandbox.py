"""Run untrusted Python (model-generated code checked against tests) in a contained child process.

`run_python(code)` runs `code` as /tmp/work/main.py with `python -I -u` (this interpreter) and passes when
it exits 0; `run_many(codes)` runs samples concurrently, in order. Layers, outermost first:

1. `unshare --net --pid --mount-proc --ipc` (root only): no network, not even loopback; a PID namespace,
   so when its pid 1 exits the kernel kills everything the sample started, setsid() escapees too.
2. A root shell as that pid 1 (the sample would be a poor init: it would ignore SIGXCPU, and unshare
   loses a SIGKILLed child's status) builds the sample's view: a private, size-capped tmpfs as /tmp (and
   /var/tmp, /dev/shm), an empty tmpfs over dirs others cannot enter (/root) with the interpreter bound
   back; then it runs the sample and exits with its status, as shells report it.
3. `prlimit`: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE (stdout/stderr are files: capped too), RLIMIT_NPROC.
4. `setpriv` to a fresh uid per sample, no groups, capabilities or new privileges. Root ignores
   RLIMIT_NPROC, so a fork bomb needs this; an own uid makes the limit count this sample alone, leaves it
   unable to write any host file (they are root's) and makes "kill every process of the uid" a safe sweep.
5. A new session, SIGKILLed as a group at the wall-clock limit; an environment from an allow-list (no
   *_KEY, MLFLOW_*, PREFECT_*, ...).

Without root and namespaces `run_python` refuses unless `allow_unisolated=True`; then only 3 (minus
RLIMIT_NPROC) and 5 apply, in a temporary directory, and `Result.isolated` is False. Gaps: a sample can
read world-readable files (the repo, the venv); `-I` ignores PYTHONHASHSEED, so hash order varies.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from shlex import quote
from subprocess import DEVNULL, Popen, TimeoutExpired
from typing import IO, Literal

Status = Literal["passed", "failed", "timeout", "killed"]
"""passed: exit 0; failed: nonzero exit (exception, assertion, MemoryError, file too large); timeout: still
running at `wall_s`, killed by us; killed: ended by a signal (the CPU limit's SIGXCPU, a crash) -- as in a
shell, exit codes above 128 read as signals."""

# Each sample gets a uid drawn at random from a range no account uses: with 2^30 of them two samples (even
# of two pipelines) do not share one, which matters as RLIMIT_NPROC counts per uid and the final sweep kills
# every process of the uid.
UID_RANGE = range(1 << 20, 1 << 30)
_WORK = "/tmp/work"  # inside the sample's private /tmp
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


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
    returncode: int  # 128 + N: ended by signal N (the shell convention, whatever the isolation)
    stdout: str
    stderr: str
    seconds: float
    isolated: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_python(code: str, limits: Limits = Limits(), allow_unisolated: bool = False) -> Result:
    """Run `code` as a script in the sandbox; raises if isolation is unavailable and not explicitly waived."""
    return _run(code, limits, _require_isolation(allow_unisolated))


def run_many(
    codes: Sequence[str], limits: Limits = Limits(), workers: int = 4, allow_unisolated: bool = False
) -> list[Result]:
    """`run_python` over `codes` with `workers` samples at a time (threads waiting on processes); in order."""
    isolated = _require_isolation(allow_unisolated)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda code: _run(code, limits, isolated), codes))


def isolation_available() -> bool:
    return _probe() is None


def describe_isolation() -> str:
    """One line for reports: what contains the samples on this machine."""
    if isolation_available():
        return "namespaces (net, pid, mount, ipc) + own unprivileged uid + rlimits (cpu, as, fsize, nproc)"
    return f"NONE (rlimits cpu, as, fsize only; isolation unavailable: {_probe()})"


def _require_isolation(allow_unisolated: bool) -> bool:
    problem = _probe()
    if problem is not None and not allow_unisolated:
        raise RuntimeError(
            f"cannot isolate untrusted code here ({problem}); run as root with util-linux's unshare and "
            "setpriv, or pass allow_unisolated=True to run it without network and process isolation"
        )
    return problem is None


# One short sample proves every layer at once: it starts as another uid, and loopback is unreachable.
_PROBE = """import errno, os, socket
assert os.getuid() != 0, "still root"
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError as e:
    assert e.errno == errno.ENETUNREACH, e
"""


@cache
def _probe() -> str | None:
    """None when isolation works, else why not."""
    if os.geteuid() != 0:
        return "not running as root"
    try:
        result = _run(_PROBE, Limits(wall_s=30), isolated=True)
    except FileNotFoundError as e:
        return f"{e.filename} is not installed"
    return None if result.passed else f"probe {result.status}: {result.stderr.strip()[-500:]}"


def _run(code: str, limits: Limits, isolated: bool) -> Result:
    base = Path(tempfile.mkdtemp(prefix="sandbox-"))  # unisolated: the cwd; isolated: the /tmp's staging
    (base / "main.py").write_text(code, encoding="utf-8")
    (base / "tmp").mkdir()
    uid = random.choice(UID_RANGE) if isolated else None
    cmd, work = _command(limits, base, uid), _WORK if isolated else str(base)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            env = {**_ENV, "HOME": work, "TMPDIR": work}
            start = time.monotonic()
            proc = Popen(
                cmd, cwd=base, env=env, stdin=DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except TimeoutExpired:
                timed_out = True
                with suppress(ProcessLookupError):  # not reaped yet: its pid (= the group id) is still ours
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            seconds = time.monotonic() - start
            with suppress(ProcessLookupError):  # background children left unisolated (else: the pid ns did)
                os.killpg(proc.pid, signal.SIGKILL)
            if uid is not None:
                _kill_uid(uid)
            stdout, stderr = _read(out, limits.max_output_chars), _read(err, limits.max_output_chars)
    finally:
        shutil.rmtree(base)
    rc = 128 - proc.returncode if proc.returncode < 0 else proc.returncode
    status: Status = "timeout" if timed_out else "passed" if rc == 0 else "killed" if rc > 128 else "failed"
    return Result(status, rc, stdout, stderr, round(seconds, 3), isolated)


def _command(limits: Limits, base: Path, uid: int | None) -> list[str]:
    # SIGXCPU at the soft CPU limit, SIGKILL at the hard one for a sample that handles SIGXCPU.
    rlimits = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_mb << 20}"]
    rlimits += [f"--fsize={limits.max_file_mb << 20}", "--core=0"]
    python = [sys.executable, "-I", "-u", "main.py"]
    if uid is None:
        return [*rlimits, "--", *python]
    return [
        *("unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc", "--"),
        *("sh", "-c", _init_script(base, uid, limits.disk_mb), "sandbox"),
        *rlimits,
        f"--nproc={limits.max_processes}",
        "--",
        *("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"),
        *("--inh-caps=-all", "--bounding-set=-all", "--", *python),
    ]


def _init_script(base: Path, uid: int, disk_mb: int) -> str:
    """pid 1 of the namespaces, as root: the sample's view of the filesystem, then the sample. The mounts
    live and die with the mount namespace: the host never sees them."""
    installs = sorted({os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)})
    # An ancestor others cannot enter (pyenv under /root, mode 700) gets an empty tmpfs over it, hiding the
    # rest; installs under it or under /tmp are bound into the new /tmp first and moved back after.
    closed = {str(a) for i in installs for a in Path(i).parents[:-1] if not os.stat(a).st_mode & 0o001}
    tops = [c for c in sorted(closed) if not any(c.startswith(o + "/") for o in closed | {"/tmp"})]
    hidden = [i for i in installs if any(i.startswith(t + "/") for t in [*tops, "/tmp"])]
    b, t = quote(str(base)), quote(str(base / "tmp"))
    lines = ["set -e", "umask 022", f"mount -t tmpfs -o size={disk_mb}m,mode=1777,nosuid,nodev sandbox {t}"]
    lines += [f"mkdir -m 700 {t}/work", f"cp {b}/main.py {t}/work/", f"chown -R {uid}:{uid} {t}/work"]
    for n, install in enumerate(hidden):
        lines += [f"mkdir {t}/.i{n}", f"mount --rbind {quote(install)} {t}/.i{n}"]
    lines += [f"mount -t tmpfs -o size=1m,mode=0755 sandbox {quote(top)}" for top in tops]
    lines.append(f"mount --move {t} /tmp")  # the new /tmp hides the host's, and so do the binds below
    for n, install in enumerate(hidden):
        dst = quote(install)
        lines += [f"mkdir -p {dst}", f"mount --move /tmp/.i{n} {dst}", f"rmdir /tmp/.i{n}"]
    lines += [f"mount --bind /tmp {d}" for d in ("/var/tmp", "/dev/shm", "/run/lock") if os.path.isdir(d)]
    return "\n".join([*lines, f"cd {_WORK}", '"$@"'])  # no exec: this shell stays pid 1


def _processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is `uid`."""
    pids = []
    # listdir, not Path.glob: glob stats each /proc/<pid>/status it found, outside any handler, and a
    # process that exits in between raises ProcessLookupError there
    for name in filter(str.isdigit, os.listdir("/proc")):
        with suppress(FileNotFoundError, ProcessLookupError):  # it exited while we looked
            text = Path("/proc", name, "status").read_text()
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in ("Z", "X"):
                pids.append(int(name))
    return pids


def _kill_uid(uid: int, deadline_s: float = 5.0) -> None:
    """The last sweep: nothing of the sample may outlive it, whatever group or namespace it ended up in."""
    end = time.monotonic() + deadline_s
    while pids := _processes_of(uid):
        if time.monotonic() > end:
            raise RuntimeError(f"sandbox processes {pids} of uid {uid} survived SIGKILL for {deadline_s}s")
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _read(f: IO[bytes], max_chars: int) -> str:
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    text = f.read(max_chars * 4).decode("utf-8", errors="replace")  # a UTF-8 char is at most 4 bytes
    if size > max_chars * 4 or len(text) > max_chars:
        text = text[:max_chars] + f"\n[... truncated: {size} bytes in all]"
    return text
