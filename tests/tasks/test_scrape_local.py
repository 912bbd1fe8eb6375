"""Local folders and git checkouts as sources (tasks/scrape/local.py): names from the folder, the checkout's
commit and the licence in each record's provenance."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scrape_builders import GOOD, scrape

MIT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\n"


def git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    cmd = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def test_local_git_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "checkout"
    (repo / "lib").mkdir(parents=True)
    (repo / "LICENSE").write_text(MIT)
    (repo / "lib" / "mod.py").write_text(GOOD)
    (repo / "setup_helpers.py").write_text('def helper():\n    """A top-level helper."""\n')
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    commit = git(repo, "rev-parse", "HEAD")
    report, records = scrape(tmp_path, sources=["local"], local_dirs=[str(repo)])
    assert set(records) == {"lib.mod.fine", "setup_helpers.helper"}
    rec = records["lib.mod.fine"]
    assert rec["path"] == "checkout/lib/mod.py"
    assert rec["provenance"]["commit"] == commit and rec["provenance"]["source"] == "local"
    assert rec["provenance"]["license"] == "MIT"
    assert report["local"] == [{"dir": str(repo.resolve()), "commit": commit, "license": "MIT"}]


def test_local_package_folder_without_git(tmp_path: Path) -> None:
    pkg = tmp_path / "plain" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(GOOD)
    (pkg / "COPYING").write_text("Some bespoke licence text.")
    _, records = scrape(tmp_path, sources=["local"], local_dirs=[str(pkg)])
    rec = records["mypkg.fine"]  # a package folder is named like an installed package
    assert rec["path"] == "mypkg/__init__.py"
    assert rec["provenance"]["commit"] is None
    assert rec["provenance"]["license"] == "see COPYING"
