"""The sandbox must contain what model-generated code can do by accident (or on purpose): each test runs a
sample that tries to escape one layer and fails if it got through. Every hostile sample runs under each
backend: root (when the tests run as root) and userns as an ordinary user (as `nobody`, through Debian's
world-readable /usr/bin/python3, when the tests run as root: CI does). Small limits keep the suite fast."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from tasks.common.sandbox import Limits, run_many, run_python
from tests.tasks.common.sandboxing import FAST, Run

pytestmark = pytest.mark.usefixtures("nothing_left_running")


def test_passing_and_failing_samples(run: Run):
    ok = run("import sys\nprint('hello', sys.flags.isolated, __name__, __file__)")
    assert (ok.status, ok.returncode, ok.stdout, ok.isolated) == (
        "passed",
        0,
        "hello 1 __main__ main.py\n",
        True,
    )
    bad = run("def f():\n    raise ValueError('boom')\nf()")
    assert (bad.status, bad.returncode) == ("failed", 1)
    assert "ValueError: boom" in bad.stderr


def test_infinite_loop_times_out_and_is_killed(run: Run):
    result = run("while True:\n    pass", Limits(wall_s=1, cpu_s=30))
    assert result.status == "timeout"
    assert 1 <= result.seconds < 2.5


def test_cpu_limit_kills_a_busy_sample(run: Run):
    result = run("while True:\n    pass", Limits(wall_s=20, cpu_s=1))
    assert (result.status, result.returncode) == ("killed", 128 + signal.SIGXCPU)


def test_cpu_limit_kills_a_sample_that_ignores_sigxcpu(run: Run):
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    result = run(code, Limits(wall_s=20, cpu_s=1))
    assert (result.status, result.returncode) == ("killed", 128 + signal.SIGKILL)


def test_detached_child_does_not_outlive_the_sample(run: Run):
    code = "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nprint('spawned')"
    result = run(code)
    # A test verdict needs a program that finished: one that leaves work running has not.
    assert (result.status, result.stdout) == ("failed", "spawned\n")
    assert "leaving 1 processes running" in result.stderr
    # the autouse fixture asserts that `sleep 300` is gone


def test_process_count_is_limited(run: Run):
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
    result = run(code, Limits(wall_s=5, max_processes=8))
    # Itself and 7 children (root would have had no limit at all); the sleepers die with it. It exits 0, but
    # a sample that ran into the process limit has not passed.
    assert (result.status, result.returncode, result.stdout) == ("failed", 0, "7\n")
    assert "the process limit (8) refused 1 fork" in result.stderr


def test_threads_count_towards_the_process_limit(run: Run):
    code = """import threading, time
started = []
try:
    for _ in range(100):
        t = threading.Thread(target=time.sleep, args=(2,), daemon=True)
        t.start()
        started.append(t)
except RuntimeError as e:
    print(len(started), e)
"""
    result = run(code, Limits(wall_s=5, max_processes=8))
    assert (result.status, result.stdout) == ("failed", "7 can't start new thread\n")


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True: os.fork()",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "import os\nfor _ in range(64):\n    try:\n        os.fork()\n    except OSError:\n        pass",
    ],
    ids=["plain", "retrying", "swallowing"],
)
def test_fork_bomb_is_contained(run: Run, code: str):
    result = run(code, Limits(wall_s=3, cpu_s=10, max_processes=16))
    # The plain bomb dies of its first refused fork; the retrying one spins at the limit until the clock;
    # the swallowing one exits 0 once every process has tried 64 times, and must not read as a pass.
    assert result.status in ("failed", "timeout") and result.seconds < 6
    refused = "BlockingIOError" in result.stderr or "the process limit (16) refused" in result.stderr
    assert result.status == "timeout" or refused
    assert run("print(1)").status == "passed"  # the host can still start processes


def test_memory_hog_is_stopped(run: Run):
    result = run("block = bytearray(4 * 1024**3)\nprint('allocated')")
    assert result.status == "failed"
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_huge_file_is_stopped_at_the_size_limit(run: Run):
    code = """import os
try:
    with open("big.bin", "wb", buffering=0) as f:
        while True:
            f.write(b"x" * (1 << 20))
except OSError as e:
    print(e.errno, os.path.getsize("big.bin"))
    raise
"""
    result = run(code)
    assert result.status == "failed"
    assert result.stdout == f"27 {2 << 20}\n"  # EFBIG at exactly max_file_mb
    assert "File too large" in result.stderr


TAMPER = """import errno, os
path = {path!r}
print(open(path).read())
for attempt in (lambda: open(path, "a").write("x"), lambda: os.remove(path), lambda: os.chmod(path, 0o777),
                lambda: os.rename(path, path + ".moved"), lambda: open(path + ".new", "w")):
    try:
        attempt()
        print("succeeded")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


@pytest.mark.parametrize("modes", [(0o755, 0o644), (0o777, 0o666)], ids=["owned-by-root", "world-writable"])
def test_files_outside_its_directory_are_untouched(run: Run, modes: tuple[int, int]):
    # Outside /tmp (the sample gets a private one), where the sample can see the file (it reads it first):
    # a root-owned file, and a canary that any uid could change if the host were writable.
    if os.geteuid() != 0:
        pytest.skip("plants files in /run")
    outside = Path(tempfile.mkdtemp(dir="/run"))
    try:
        outside.chmod(modes[0])
        victim = outside / "victim.txt"
        victim.write_text("original")
        victim.chmod(modes[1])
        result = run(TAMPER.format(path=str(victim)))
        assert result.status == "passed", result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "original" and len(lines) == 6
        assert set(lines[1:]) <= {"EACCES", "EPERM", "EROFS"}, lines  # denied, whichever check came first
        if modes[0] == 0o777:
            assert set(lines[1:]) == {"EROFS"}  # the read-only view alone protects a world-writable file
        assert victim.read_text() == "original" and victim.stat().st_mode & 0o777 == modes[1]
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    finally:
        for p in outside.iterdir():
            p.unlink()
        outside.rmdir()


def test_disk_use_is_capped_by_the_private_tmp(run: Run):
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
    result = run(code)
    assert result.status == "passed"
    errname, whole_files = result.stdout.split()
    assert errname == "ENOSPC" and 6 <= int(whole_files) <= 8  # disk_mb=8, less the script and inodes


def test_host_tmp_is_neither_visible_nor_written(run: Run):
    marker = Path(tempfile.mkstemp(prefix="visible-to-host-")[1])
    try:
        code = f"""import os
print({marker.name!r} in os.listdir("/tmp"))
for d in ("/tmp", "/var/tmp", "/dev/shm"):
    open(os.path.join(d, "left-by-sample-{os.getpid()}"), "w").write("x")
"""
        result = run(code)
        assert (result.status, result.stdout) == ("passed", "False\n"), result.stderr
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            assert not Path(d, f"left-by-sample-{os.getpid()}").exists()
    finally:
        marker.unlink()


def test_no_network_not_even_loopback(run: Run):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        result = run(code)
        assert result.status == "failed"
        assert "Network is unreachable" in result.stderr
        # A completed handshake would wait in the backlog even though nobody called accept().
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()


def test_killing_its_parent_or_the_test_process_fails(run: Run):
    code = f"""import os
for pid in ({os.getpid()}, os.getppid()):
    try:
        os.kill(pid, 9)
    except OSError as e:
        print(type(e).__name__)
"""
    result = run(code)
    # We are still here to read the result: this process is outside the sample's PID namespace, and its
    # parent there is process 1, which either is another uid (root) or, as the namespace's init, receives no
    # signal it did not ask for (userns) -- and it lived to report how the sample ended.
    assert result.status == "passed"
    assert result.stdout.splitlines()[0] == "ProcessLookupError"
    assert result.stdout.splitlines()[1:] in ([], ["PermissionError"])


def test_environment_secrets_do_not_reach_the_sample(run: Run, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-secret-4242")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow-secret-host:5000")
    code = f"""import os
print(dict(os.environ))
try:
    print(open("/proc/{os.getpid()}/environ").read())
except OSError as e:
    print(type(e).__name__)
"""
    result = run(code)
    assert result.status == "passed"
    assert "PATH" in result.stdout  # the environment was printed at all
    assert "sk-fake-secret-4242" not in result.stdout and "mlflow-secret-host" not in result.stdout


def test_output_is_truncated(run: Run):
    result = run("print('x' * 100_000)\nprint('end')")
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


def test_the_callers_home_is_hidden(tmp_path: Path):
    # The sample could print what it reads into a report; the home holds tokens (~/.cache/huggingface/token).
    home = Path.home()
    if str(home) in ("/", "") or not os.access(home, os.W_OK):
        pytest.skip("no home of our own to plant a secret in")
    secret = home / f".sandbox-test-secret-{os.getpid()}"
    secret.write_text("hf_fake_token")
    try:
        code = f"import os\nprint(os.path.exists({str(secret)!r}), os.path.isdir({str(home)!r}))"
        result = run_python(code, FAST)
        assert (result.status, result.stdout) == ("passed", "False True\n"), result.stderr
    finally:
        secret.unlink()


def test_a_temporary_folder_under_the_hidden_home_still_works(monkeypatch: pytest.MonkeyPatch):
    # $TMPDIR under the home (clusters do this; `make serve` puts it in .serve/ of a checkout under ~): the
    # sample's /tmp is staged there, and the home is hidden only once the staging is in place
    home = Path.home()
    if str(home) in ("/", "") or not os.access(home, os.W_OK) or str(home).startswith("/tmp"):
        pytest.skip("no home of our own outside /tmp")
    staging = Path(tempfile.mkdtemp(dir=home, prefix=".sandbox-test-tmp-"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(staging))
        result = run_python("import os\nprint(os.getcwd(), os.listdir('.'))", FAST)
        assert (result.status, result.stdout) == ("passed", "/tmp/work ['main.py']\n"), result.stderr
    finally:
        shutil.rmtree(staging)
