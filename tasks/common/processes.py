"""What the sandbox needs to know about processes, read from /proc: a process's children, when processes
have ended, and every live process of a uid (to sweep a sample's leftovers after a timeout)."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path


def children(pid: int) -> list[int]:
    with suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def wait_ended(pids: list[int], deadline_s: float = 5.0) -> None:
    """Until each of `pids` has exited (gone, or a zombie: a PID namespace's process 1 becomes one only once
    the kernel has killed and reaped everything else in it)."""
    end = time.monotonic() + deadline_s
    for pid in pids:
        while time.monotonic() < end:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.005)


def processes_of(uid: int) -> list[int]:
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


def kill_uid(uid: int, deadline_s: float = 5.0) -> None:
    """The last sweep: nothing of a uid may outlive it, whatever group or namespace it ended up in."""
    end = time.monotonic() + deadline_s
    while pids := processes_of(uid):
        if time.monotonic() > end:
            raise RuntimeError(f"sandbox processes {pids} of uid {uid} survived SIGKILL for {deadline_s}s")
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
