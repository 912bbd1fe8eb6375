"""The processes `make serve` started, read from /proc on Linux (signal 0 elsewhere): whether one is alive and
the same one (PIDs get reused), its group and descendants, and stopping them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

LINUX_PROC = Path("/proc/self/stat").exists()


class StillAlive(RuntimeError):
    """Processes that outlived SIGKILL."""


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, process group, start time in clock ticks), or None when there is no such process."""
    if not LINUX_PROC:  # macOS: enough to say it exists
        try:
            return "R", 0, os.getpgid(pid), 0
        except ProcessLookupError:
            return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def alive(pid: int, start: int | None = None) -> bool:
    """A live (not zombie) process, and the same one when `start` is known: PIDs get reused."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in "ZX" and (start is None or not stat[3] or stat[3] == start)


def family(pid: int, leader: bool = True) -> dict[int, int]:
    """pid -> start time of the members of process group `pid` (and of `pid` itself with `leader`), and of
    all their descendants."""
    if not LINUX_PROC:
        return {pid: 0} if leader and proc_stat(pid) else {}
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(int(entry.name))
        if stat and stat[0] not in "ZX":
            table[int(entry.name)] = stat
    found = {p for p, (_, _, group, _) in table.items() if group == pid and (leader or p != pid)}
    if leader and pid in table:
        found.add(pid)
    todo = list(found)
    while todo:
        parent = todo.pop()
        children = {p for p, (_, ppid, _, _) in table.items() if ppid == parent} - found
        found |= children
        todo.extend(children)
    return {p: table[p][3] for p in found}


def terminate(pid: int, start: int | None, grace: float = 30.0) -> None:
    # the leader (and its descendants) only if it is still ours: a dead leader's PID may now be another's
    members = family(pid, leader=alive(pid, start))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        groups = {stat[2] for p in members if (stat := proc_stat(p))} - {os.getpgid(0)}
        for group in groups:  # a descendant may have made a group of its own (a flow run)
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 10)
        while time.monotonic() < deadline:
            members = {p: s for p, s in members.items() if alive(p, s)}
            if not members:
                return
            time.sleep(0.2)
    raise StillAlive(f"processes {sorted(members)} (of PID {pid}) are still alive after SIGKILL")
