"""File I/O shared by every stage: JSON/JSONL, content hashes of path inputs, where the workspace lives.

The one fsspec seam. A workspace is a local folder or an fsspec URL (`memory://ws` in tests,
`s3://bucket/prefix`, `gs://...`) for workers that share no disk. Stage and run records are reached
through these helpers, which take a local path or a URL (`join(workspace, "runs", ...)`): a local target
keeps plain `pathlib` I/O, a URL goes through fsspec. Stage code itself only ever sees local folders
(tasks/common/stage.py builds into a local scratch folder and uploads it; inputs are downloaded once into
`local_cache`), since transformers and datasets need local paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 1 << 20


LOCAL_PROTOCOLS = (None, "file", "local")


def is_remote(target: str | Path) -> bool:
    """Is `target` an fsspec URL of a non-local filesystem (memory://, s3://, gs://)? Paths are local."""
    return isinstance(target, str) and fsspec.core.split_protocol(target)[0] not in LOCAL_PROTOCOLS


def workspace_location(cfg) -> Path | str:
    """Where stages and runs live: the config's `workspace`, else $FINETUNE_WORKSPACE, else
    `<repo>/workspace`; an absolute Path, or the fsspec URL of a remote workspace. Raises ValueError for
    a URL whose filesystem fsspec does not know or cannot import (s3:// needs s3fs, gs:// gcsfs)."""
    raw = cfg.workspace or os.environ.get("FINETUNE_WORKSPACE") or str(REPO_ROOT / "workspace")
    protocol, rest = fsspec.core.split_protocol(raw)
    if protocol in LOCAL_PROTOCOLS:
        return Path(rest).expanduser().resolve()
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(f"workspace {raw!r}: {exc} (a package fsspec needs for {protocol}://)") from None
    except ValueError:
        raise ValueError(f"workspace {raw!r}: fsspec knows no filesystem {protocol}://") from None
    return raw.rstrip("/")


def workspace_path(cfg) -> Path:
    """This machine's folder of the workspace: the workspace itself when it is local; for a remote one,
    its `local_cache`, which holds what stays per machine (teacher and HTTP caches, logs, training
    checkpoints, stage folders being built or downloaded)."""
    where = workspace_location(cfg)
    return where if isinstance(where, Path) else local_cache(where)


def local_cache(url: str) -> Path:
    """This machine's cache for the remote workspace `url`: $FINETUNE_CACHE, else ~/.cache/finetune, one
    folder per workspace URL. Safe to delete while no run is active."""
    root = Path(os.environ.get("FINETUNE_CACHE") or "~/.cache/finetune").expanduser().resolve()
    return root / f"{fsspec.core.split_protocol(url)[0]}-{hash_json(url)}"


def join(base: str | Path, *parts: str) -> str | Path:
    """`base/part/...`: a Path for a local base, a URL for a remote one."""
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else Path(base).joinpath(*parts)


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def is_file(target: str | Path) -> bool:
    if not is_remote(target):
        return Path(target).is_file()
    fs, path = _fs(target)
    return fs.isfile(path)


def read_text(target: str | Path) -> str:
    if not is_remote(target):
        return Path(target).read_text()
    fs, path = _fs(target)
    return fs.cat_file(path).decode()


def write_text(target: str | Path, text: str, exclusive: bool = False) -> bool:
    """Write `text` to `target` (its folders made as needed); with `exclusive`, only if `target` does not
    exist yet: False if it did. Create-if-absent is atomic where the filesystem has it (local files,
    memory://, s3fs's conditional writes); elsewhere a writer racing between the check and the write wins
    last."""
    if not is_remote(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "x" if exclusive else "w") as fh:
                fh.write(text)
        except FileExistsError:
            return False
        return True
    fs, path = _fs(target)
    if exclusive and fs.exists(path):
        return False
    try:
        with fs.open(path, "xb" if exclusive else "wb") as fh:
            fh.write(text.encode())
    except FileExistsError:
        return False
    return True


def listdir(target: str | Path) -> list[str]:
    """The names in a folder (or under a URL prefix); [] when there is none."""
    if not is_remote(target):
        return sorted(p.name for p in Path(target).iterdir()) if Path(target).is_dir() else []
    fs, path = _fs(target)
    try:
        found = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(name.rstrip("/").rsplit("/", 1)[-1] for name in found)


def glob(base: str | Path, pattern: str) -> list[str | Path]:
    """Targets under `base` matching `pattern` (`runs/*/summary.json`), sorted."""
    if not is_remote(base):
        return sorted(Path(base).glob(pattern))
    fs, path = _fs(base)
    prefix = base.rstrip("/")
    return sorted(f"{prefix}/{p[len(path.rstrip('/')) :].lstrip('/')}" for p in fs.glob(f"{path}/{pattern}"))


def remove(target: str | Path) -> None:
    """Delete a file or a folder (with everything in it)."""
    if not is_remote(target):
        target = Path(target)
        if target.is_file() or target.is_symlink():
            target.unlink()
        else:
            shutil.rmtree(target)
        return
    fs, path = _fs(target)
    fs.rm(path, recursive=True)


def upload(folder: Path, url: str, last: str = "manifest.json") -> None:
    """Copy a local folder's files to `url`; the top-level file `last` goes last, after all the others."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    first = [p for p in files if p != Path(folder) / last]
    fs, path = _fs(url)
    for batch in (first, [p for p in files if p not in first]):
        if batch:
            fs.put([str(p) for p in batch], [f"{path}/{p.relative_to(folder).as_posix()}" for p in batch])


def download(url: str, dest: Path, top_level_only: bool = False) -> None:
    """Copy the files under `url` into the new local folder `dest` (only its top-level files: reports,
    tables, plots, not model or dataset folders, with `top_level_only`)."""
    fs, path = _fs(url)
    if top_level_only:
        found = [e["name"] for e in fs.ls(path, detail=True) if e["type"] == "file"]
    else:
        found = fs.find(path)
    root = path.rstrip("/")
    local = [dest / name[len(root) :].lstrip("/") for name in found]
    for target in {p.parent for p in local} | {dest}:
        target.mkdir(parents=True, exist_ok=True)
    if found:
        fs.get(found, [str(p) for p in local])


def check_workspace(path: Path | str) -> None:
    """Raise ValueError unless `path` is (or can be made) a writable folder; leaves nothing behind.

    Run before Prefect or MLflow start, so that a workspace under /proc or one that is a file is a one-line
    config error, not a failure after the servers are up. A remote workspace is probed with one small
    object, written and deleted (a missing bucket or credentials show here).
    """
    if is_remote(path):
        probe = join(path, f".finetune-probe-{os.getpid()}")
        try:
            write_text(probe, "")
            remove(probe)
        except (OSError, ValueError) as exc:
            raise ValueError(f"workspace {path!r} cannot be written ({type(exc).__name__}: {exc})") from None
        return
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
    return json.loads(read_text(path))


def write_json(path: str | Path, payload: Any) -> None:
    # insertion order, not sorted: reports list stages and metrics in the order people read them
    text = json.dumps(payload, indent=2, default=str) + "\n"
    if is_remote(path):
        write_text(path, text)
    else:
        Path(path).write_text(text)  # as before: the folder must exist


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
