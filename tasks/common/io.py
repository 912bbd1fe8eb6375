"""File I/O shared by every stage: JSON/JSONL, content hashes of path inputs, where the workspace lives.

This is the one seam a later fsspec workspace (s3://, gs://) plugs into: stages read and write their
folders through these helpers, never through ad-hoc `open` calls on paths they assembled themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20


def workspace_path(cfg) -> Path:
    """The config's `workspace`, else $FINETUNE_WORKSPACE, else `<repo>/workspace`; absolute."""
    raw = cfg.workspace or os.environ.get("FINETUNE_WORKSPACE") or str(REPO_ROOT / "workspace")
    return Path(raw).expanduser().resolve()


def check_workspace(path: Path) -> None:
    """Raise ValueError unless `path` is (or can be made) a writable folder; leaves nothing behind.

    Run before Prefect or MLflow start, so that a workspace under /proc or one that is a file is a one-line
    config error, not a failure after the servers are up.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"workspace {str(path)!r} exists and is not a folder")
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir():
        raise ValueError(f"workspace {str(path)!r}: {str(ancestor)!r} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".finetune-probe-", dir=ancestor))
    except OSError as exc:
        raise ValueError(
            f"workspace {str(path)!r} cannot be written ({exc.strerror} in {str(ancestor)!r})"
        ) from None


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_json(path: str | Path, payload: Any) -> None:
    # insertion order, not sorted: reports list stages and metrics in the order people read them
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def hash_json(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_HASHES: dict[tuple, str] = {}


def hash_path(path: str | Path, pattern: str = "*") -> str:
    """sha256 of a file, or of a folder's relative file names and contents (sorted); memoised per process.

    A path input (a seed-task file, a local model folder) is keyed by what it holds, not by its name: the
    memo is keyed by every file's size and mtime, so an edit is seen while repeated key computations in
    one run (planning, Prefect's cache key, the task itself) read a large folder once. `pattern` limits a
    folder to some files (`*.py`: an installed package's source, not the .pyc files Python writes later).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    else:
        files = [path]
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _HASHES:
        digest = hashlib.sha256()
        for p in files:
            digest.update(p.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            digest.update(b"\x00")
            with open(p, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
        _HASHES[stamp] = digest.hexdigest()[:16]
    return _HASHES[stamp]
