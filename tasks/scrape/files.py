"""Python files from a folder (an installed package or a local checkout), with the skip rules applied.

The walk follows symlinked folders once (a link back to an ancestor is a loop, one to a folder already
walked a duplicate; both counted, neither followed) and lists files in sorted relative-path order, so the
output (and so `max_files`) is the same on every machine. Rules, in order: `exclude_dirs`, `exclude_files`,
`max_files`, then, reading the file, `max_file_bytes`, binary, encoding, `generated_markers`, syntax.

This process walks the tree and reads the files; parsing and extraction (the CPU work) run over chunks of
files where the config's `executor` says (tasks/common/parallel.py), which get the files' bytes, not their
paths, so Dask workers need no view of this machine's disk. Records come back in file order.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_config.schema import ScrapeConfig
from tasks.common.parallel import Executor
from tasks.common.progress import Progress
from tasks.scrape.extract import Origin, UnreadableError, decode, module_records, parse
from tasks.scrape.report import Tally

GENERATED_HEAD_LINES = 10  # generators announce themselves at the top
FILES_PER_TASK = 50  # files per chunk sent to a worker


def python_files(root: Path, tally: Tally) -> list[tuple[Path, str]]:
    """(path, POSIX path relative to `root`) of every `.py` file under `root`, sorted by relative path."""
    if root.is_file():
        return [(root, root.name)]
    found: list[tuple[Path, str]] = []
    walked: set[str] = set()

    def walk(folder: Path, rel: str, ancestors: tuple[str, ...]) -> None:
        real = os.path.realpath(folder)
        walked.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            tally.files["seen"] += 1
            tally.fail("unreadable", f"{rel or '.'}: {exc.strerror}")
            return
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name == "__pycache__":
                continue
            try:
                is_dir = entry.is_dir()  # follows a symlink
                if entry.is_symlink():
                    os.stat(entry.path)  # raises for a loop of links or a dangling one
            except OSError as exc:
                tally.files["seen"] += 1
                tally.fail("symlink_loop" if exc.errno == errno.ELOOP else "broken_symlink", child)
                continue
            if is_dir:
                target = os.path.realpath(entry.path)
                if entry.is_symlink() and target in (*ancestors, real):
                    tally.files["seen"] += 1
                    tally.fail("symlink_loop", child)
                elif entry.is_symlink() and target in walked:
                    tally.files["seen"] += 1
                    tally.fail("symlink_duplicate", child)
                else:
                    walk(Path(entry.path), child, (*ancestors, real))
            elif entry.name.endswith(".py"):
                found.append((Path(entry.path), child))

    walk(root, "", ())
    return sorted(found, key=lambda item: item[1])


def rule_skip(rel: str, cfg: ScrapeConfig) -> str | None:
    """The reason a rule skips this file without reading it, or None."""
    *dirs, name = rel.split("/")
    for part in dirs:
        if part in cfg.exclude_dirs:
            return f"excluded_dir:{part}"
    for pattern in cfg.exclude_files:
        if fnmatch.fnmatchcase(name, pattern):
            return "excluded_file"  # not per pattern: globs are not valid metric names
    return None


def is_generated(text: str, markers: list[re.Pattern]) -> bool:
    head = "\n".join(text.split("\n", GENERATED_HEAD_LINES)[:GENERATED_HEAD_LINES])
    return any(m.search(head) for m in markers)


@dataclass(frozen=True)
class SourceFile:
    origin: Origin
    data: bytes


def read_file(path: Path, origin: Origin, cfg: ScrapeConfig, tally: Tally) -> SourceFile | None:
    """The file's bytes, or None: too large or unreadable (counted in `tally`)."""
    try:
        if path.stat().st_size > cfg.max_file_bytes:
            tally.skip("too_large")
            return None
        return SourceFile(origin, path.read_bytes())
    except OSError as exc:
        tally.fail("unreadable", f"{origin.path}: {exc.strerror}")
        return None


@dataclass
class Extraction:
    """What every chunk of files needs (tasks/common/parallel.py's context)."""

    cfg: ScrapeConfig
    markers: list[re.Pattern] = field(default_factory=list)

    def prepare(self) -> None:
        self.markers = [re.compile(m) for m in self.cfg.generated_markers]


def file_records(source: SourceFile, ctx: Extraction, tally: Tally) -> Iterator[dict]:
    """The records of one file; a skip or failure is counted in `tally` and yields nothing."""
    origin = source.origin
    try:
        text = decode(source.data)
        if is_generated(text, ctx.markers):
            tally.skip("generated")
            return
        tree = parse(text, origin.location)
    except UnreadableError as exc:
        tally.fail(exc.reason, origin.path)
        return
    tally.files["parsed"] += 1
    sha256 = hashlib.sha256(source.data).hexdigest()
    yield from module_records(text, tree, origin, sha256, ctx.cfg.include_private, tally.definitions)


def files_in(part: Tally) -> int:
    """How many files a chunk's tally accounts for: each one is parsed, skipped or failed, once."""
    return part.files["parsed"] + sum(part.skipped.values()) + sum(part.failed.values())


def extract_files(files: list[SourceFile], ctx: Extraction) -> tuple[list[dict], Tally]:
    """One chunk of files: their records in order, and what happened to each file."""
    tally = Tally()
    return [record for source in files for record in file_records(source, ctx, tally)], tally


def tree_records(
    root: Path,
    origin_of: Callable[[Path, str], Origin],
    cfg: ScrapeConfig,
    tally: Tally,
    executor: Executor,
) -> Iterator[dict]:
    """Records of every file under `root` that the rules keep; `origin_of(path, rel)` names each file."""
    files = python_files(root, tally)
    read, sources = 0, []
    for path, rel in files:
        tally.files["seen"] += 1
        if reason := rule_skip(rel, cfg):
            tally.skip(reason)
            continue
        if cfg.max_files is not None and read >= cfg.max_files:
            tally.skip("over_max_files")
            continue
        read += 1
        tally.files["read"] += 1
        if source := read_file(path, origin_of(path, rel), cfg, tally):
            sources.append(source)
    chunks = executor.map_chunks(extract_files, sources, Extraction(cfg), chunk=FILES_PER_TASK)
    with Progress(len(sources), f"scrape {root.name}", key="scrape-progress", unit="file") as progress:
        for records, part in chunks:
            progress.update(files_in(part))
            tally.merge(part)
            yield from records
    if not files:
        tally.warnings.append(f"{root} holds no .py files")
