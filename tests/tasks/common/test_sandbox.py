"""The sandbox must contain what model-generated code can do by accident (or on purpose): each test runs a
sample that tries to escape one layer and fails if it got through. Small limits keep the suite fast."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from tasks.common import sandbox
from tasks.common.sandbox import UID_RANGE, Limits, run_many, run_python

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs root (namespaces, uid drop)")

FAST = Limits(wall_s=5, memory_mb=512, max_processes=16, max_file_mb=2, max_output_chars=1000, disk_mb=8)


def sandbox_processes() -> list[int]:
    """Live processes of any sample uid, read straight from /proc (not through the module under test)."""
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path("/proc", name, "status").read_text()
        except (FileNotFoundError, ProcessLookupError):  # it exited while we looked
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) in UID_RANGE and not fields["State"].strip().startswith("Z"):
            pids.append(int(name))
    return pids


@pytest.fixture(autouse=True)
def nothing_left_running():
    assert sandbox_processes() == [], "a previous sample left processes behind"
    yield
    assert sandbox_processes() == [], "the sample left processes behind"


def test_isolation_is_available_here():
    assert sandbox.isolation_available(), sandbox.describe_isolation()
    assert "namespaces" in sandbox.describe_isolation()


def test_passing_and_failing_samples():
    ok = run_python("import sys\nprint('hello', sys.flags.isolated)", FAST)
    assert (ok.status, ok.returncode, ok.stdout, ok.isolated) == ("passed", 0, "hello 1\n", True)
    bad = run_python("def f():\n    raise ValueError('boom')\nf()", FAST)
    assert (bad.status, bad.returncode) == ("failed", 1)
    assert "ValueError: boom" in bad.stderr


def test_infinite_loop_times_out_and_is_killed():
    result = run_python("while True:\n    pass", Limits(wall_s=1, cpu_s=30))
    assert result.status == "timeout"
    assert 1 <= result.seconds < 2.5


def test_cpu_limit_kills_a_busy_sample():
    result = run_python("while True:\n    pass", Limits(wall_s=20, cpu_s=1))
    assert (result.status, result.returncode) == ("killed", 128 + signal.SIGXCPU)


def test_cpu_limit_kills_a_sample_that_ignores_sigxcpu():
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    result = run_python(code, Limits(wall_s=20, cpu_s=1))
    assert (result.status, result.returncode) == ("killed", 128 + signal.SIGKILL)


def test_detached_child_does_not_outlive_the_sample():
    code = "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nprint('spawned')"
    result = run_python(code, FAST)
    assert (result.status, result.stdout) == ("passed", "spawned\n")
    # the autouse fixture asserts that `sleep 300` is gone


def test_process_count_is_limited():
    code = """import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except BlockingIOError:
    print(n)
"""
    result = run_python(code, Limits(wall_s=5, max_processes=8))
    # Itself and 7 children (root would have had no limit at all); the sleepers die with it.
    assert (result.status, result.stdout) == ("passed", "7\n")


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True: os.fork()",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    ],
    ids=["plain", "retrying"],
)
def test_fork_bomb_is_contained(code: str):
    result = run_python(code, Limits(wall_s=3, cpu_s=10, max_processes=16))
    # The plain bomb dies of its first refused fork; the retrying one spins at the limit until the clock.
    assert result.status in ("failed", "timeout") and result.seconds < 6
    assert result.status == "timeout" or "BlockingIOError" in result.stderr
    assert run_python("print(1)", FAST).status == "passed"  # the host can still start processes


def test_memory_hog_is_stopped():
    result = run_python("block = bytearray(4 * 1024**3)\nprint('allocated')", FAST)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_huge_file_is_stopped_at_the_size_limit():
    code = """import os
try:
    with open("big.bin", "wb", buffering=0) as f:
        while True:
            f.write(b"x" * (1 << 20))
except OSError as e:
    print(e.errno, os.path.getsize("big.bin"))
    raise
"""
    result = run_python(code, FAST)
    assert result.status == "failed"
    assert result.stdout == f"27 {2 << 20}\n"  # EFBIG at exactly max_file_mb
    assert "File too large" in result.stderr


def test_files_outside_its_directory_are_untouched():
    # Outside /tmp (the sample gets a private one) in a world-traversable directory: only ownership and modes
    # protect the file, and the sample first reads it to prove it sees it.
    outside = Path(tempfile.mkdtemp(dir="/run"))
    try:
        outside.chmod(0o755)
        victim = outside / "victim.txt"
        victim.write_text("original")
        victim.chmod(0o644)
        code = f"""import os
path = {str(victim)!r}
print(open(path).read())
for attempt in (lambda: open(path, "a").write("x"), lambda: os.remove(path), lambda: os.chmod(path, 0o777),
                lambda: os.rename(path, path + ".moved"), lambda: open(path + ".new", "w")):
    try:
        attempt()
        print("succeeded")
    except PermissionError:
        print("denied")
"""
        result = run_python(code, FAST)
        assert result.status == "passed", result.stderr
        assert result.stdout == "original\n" + "denied\n" * 5
        assert victim.read_text() == "original" and victim.stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    finally:
        for p in outside.iterdir():
            p.unlink()
        outside.rmdir()


def test_disk_use_is_capped_by_the_private_tmp():
    code = """import errno
n = 0
try:
    while True:
        with open(f"f{n}", "wb", buffering=0) as f:
            f.write(bytes(1 << 20))
        n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
"""
    result = run_python(code, FAST)
    assert result.status == "passed"
    errname, whole_files = result.stdout.split()
    assert errname == "ENOSPC" and 6 <= int(whole_files) <= 8  # disk_mb=8, less the script and inodes


def test_host_tmp_is_neither_visible_nor_written():
    marker = Path(tempfile.mkstemp(prefix="visible-to-host-")[1])
    try:
        code = f"""import os
print({marker.name!r} in os.listdir("/tmp"))
for d in ("/tmp", "/var/tmp", "/dev/shm"):
    open(os.path.join(d, "left-by-sample-{os.getpid()}"), "w").write("x")
"""
        result = run_python(code, FAST)
        assert (result.status, result.stdout) == ("passed", "False\n"), result.stderr
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            assert not Path(d, f"left-by-sample-{os.getpid()}").exists()
    finally:
        marker.unlink()


def test_no_network_not_even_loopback():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        result = run_python(code, FAST)
        assert result.status == "failed"
        assert "Network is unreachable" in result.stderr
        # A completed handshake would wait in the backlog even though nobody called accept().
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()


def test_killing_its_parent_or_the_test_process_fails():
    code = f"""import os
for pid in ({os.getpid()}, os.getppid()):
    try:
        os.kill(pid, 9)
    except OSError as e:
        print(type(e).__name__)
"""
    result = run_python(code, FAST)
    # We are still here to read the result, and both kills failed (out of the namespace, or not its own).
    assert result.status == "passed"
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and set(lines) <= {"ProcessLookupError", "PermissionError"}


def test_environment_secrets_do_not_reach_the_sample(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-secret-4242")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-secret-host:5000")
    code = f"""import os
print(dict(os.environ))
try:
    print(open("/proc/{os.getpid()}/environ").read())
except OSError as e:
    print(type(e).__name__)
"""
    result = run_python(code, FAST)
    assert result.status == "passed"
    assert "PATH" in result.stdout  # the environment was printed at all
    assert "sk-fake-secret-4242" not in result.stdout and "mlflow-secret-host" not in result.stdout


def test_output_is_truncated():
    result = run_python("print('x' * 100_000)\nprint('end')", FAST)
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 1000 + "\n[... truncated: 100005 bytes")
    assert len(result.stdout) < 1100


def test_run_many_keeps_order_and_runs_concurrently():
    # each program prints its index, when it started and when it ended: concurrent means every one started
    # before any ended (an overlap, not a wall-clock bound, which a loaded machine would break)
    codes = [
        f"import time\nstart = time.time()\ntime.sleep(2)\nprint({i}, start, time.time())" for i in range(4)
    ]
    results = run_many(codes, FAST, workers=4)
    lines = [r.stdout.split() for r in results]
    assert [line[0] for line in lines] == ["0", "1", "2", "3"]
    starts, ends = [float(line[1]) for line in lines], [float(line[2]) for line in lines]
    assert max(starts) < min(ends)


def test_refuses_to_run_unisolated_unless_allowed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: "no namespaces in this test")
    with pytest.raises(RuntimeError, match="allow_unisolated=True"):
        run_python("print(1)", FAST)
    result = run_python("print(1)", FAST, allow_unisolated=True)
    assert (result.status, result.stdout, result.isolated) == ("passed", "1\n", False)
