"""Local folders and git checkouts as sources. A folder's records are named from the folder (a package
folder, one holding `__init__.py`, is named like an installed package) and carry the checkout's commit.
The content hash of each folder's `.py` files is in the stage key, like an installed package's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

from pipeline_config.schema import ScrapeConfig
from tasks.common.io import hash_path
from tasks.common.parallel import Executor
from tasks.scrape.extract import Origin
from tasks.scrape.files import tree_records
from tasks.scrape.licence import folder_licence
from tasks.scrape.report import Tally


def local_root(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ValueError(f"scrape.local_dirs: {raw!r} is not a folder")
    return path.resolve()


def git_info(folder: Path) -> tuple[str | None, Path | None]:
    """(HEAD commit, checkout root), or (None, None) outside a git checkout or without git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "-q", "HEAD")
    top = git("rev-parse", "--show-toplevel")
    return commit, Path(top) if top else None


def local_records(
    raw: str, cfg: ScrapeConfig, tally: Tally, executor: Executor
) -> tuple[Iterator[dict], dict]:
    root = local_root(raw)
    commit, checkout = git_info(root)
    licence = folder_licence(root, stop=checkout or root)
    is_package = (root / "__init__.py").is_file()

    def origin_of(path: Path, rel: str) -> Origin:
        parts = rel.removesuffix(".py").split("/")
        parts = [root.name, *parts] if is_package else parts
        if parts[-1] == "__init__":
            parts.pop()
        return Origin("local", str(path), f"{root.name}/{rel}", ".".join(parts), None, None, commit, licence)

    info = {"dir": str(root), "commit": commit, "license": licence}
    return tree_records(root, origin_of, cfg, tally, executor), info


def local_identity(raw: str) -> dict:
    root = local_root(raw)
    return {"dir": str(root), "sources": hash_path(root, "*.py"), "commit": git_info(root)[0]}
