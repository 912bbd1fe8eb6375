"""Stage versions on a local workspace: version folders named after their writer, the per-key lock, the
atomic switch of a key's symlink, and the sweep of what killed or finished runs left behind.

Work happens in a private version folder `.v-<key>-<host>-<pid>-<rand>`; `<key>` itself is a symlink to
the published version, switched with one atomic rename under a per-key lock. So two runs that build the
same key never fail (the second finds the first's output under the lock and discards its own), a forced
rebuild replaces the output without a moment where the key is missing, and a reader holding the resolved
version path keeps reading a complete version while another run switches the link. Versions that lost
the link are removed later by `sweep`: unfinished ones once their writer is dead, superseded ones after
`SUPERSEDED_GRACE_S`. tasks/common/remote.py is the same on an fsspec URL, with pointer objects for links;
tasks/common/stage.py builds on both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

SUPERSEDED_GRACE_S = 3600  # a run that resolved the old version an hour ago has long loaded what it needs
HOST = socket.gethostname()


def private_name(key: str) -> str:
    """A version folder's name, unique to this writer: `.v-<key>-<host>-<pid>-<rand>` (see `sweep`)."""
    return f".v-{key}-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def writer_alive(name: str) -> bool:
    """Is the process that made `.v-<key>-<host>-<pid>-<rand>` still running? Other hosts: assume so."""
    try:
        _key, rest = name.removeprefix(".v-").split("-", 1)
        host, pid, _rand = rest.rsplit("-", 2)  # host names may hold dashes; keys and pids do not
    except ValueError:
        return False
    return host != HOST or process_alive(int(pid)) if pid.isdigit() else False


@contextlib.contextmanager
def key_lock(
    workspace: Path, stage: str, key: str, waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """An exclusive lock per stage key (flock: released by the kernel if the holder dies); `waiting` is
    called once if another process holds it."""
    locks = Path(workspace) / "stages" / stage / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                waiting()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def switch(final: Path, version: Path) -> None:
    """Point `final` at `version` with one atomic rename; the previous version is marked superseded."""
    link = final.parent / f".link-{final.name}-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.symlink(version.name, link)  # relative: the workspace can be moved or mounted elsewhere
    previous = final.resolve() if final.is_symlink() else None
    if final.exists() and not final.is_symlink():  # a plain folder from an older layout or a crash
        final.rename(final.parent / f".v-{final.name}-{HOST}-{os.getpid()}-old{uuid.uuid4().hex[:8]}")
    os.replace(link, final)
    if previous and previous != version.resolve() and previous.is_dir():
        (previous / ".superseded").write_text(datetime.now(UTC).isoformat())


def sweep(workspace: Path, now: float) -> list[str]:
    """Delete the stray links and versions no key names any more; return the removed paths.

    Unfinished versions and stray links whose writer is dead go at once; versions another run superseded
    go after SUPERSEDED_GRACE_S, since a run that resolved them before the switch may still be reading.
    """
    removed: list[str] = []
    for parent in sorted((Path(workspace) / "stages").glob("*")):
        linked = {p.resolve() for p in parent.iterdir() if p.is_symlink()}
        for entry in parent.iterdir():
            stale = False
            if entry.name.startswith(".link-"):
                stale = not writer_alive(entry.name.replace(".link-", ".v-", 1))
            elif entry.name.startswith((".tmp-", ".old-")):  # the previous layout's leftovers
                stale = True
            elif entry.name.startswith(".v-") and entry.resolve() not in linked:
                marker = entry / ".superseded"
                if marker.is_file():
                    stale = now - marker.stat().st_mtime > SUPERSEDED_GRACE_S
                else:
                    stale = not writer_alive(entry.name)
            if stale:
                if entry.is_symlink() or entry.is_file():
                    entry.unlink()
                else:
                    shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed
