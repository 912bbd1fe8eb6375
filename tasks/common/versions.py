"""What a stage's output depends on besides its config and inputs: its code and the libraries it runs.

`code_version("tasks.training")` hashes every file of the stage's package (data files included) plus every
project module it imports, followed transitively through `import` statements read with `ast` (nothing is
imported to find them). An edit to `tasks/common/models.py` therefore changes the key of every stage that
loads a model, and of no other; an edit to the orchestration (flows/: Prefect tasks, MLflow bookkeeping) or
to where logs go (OUTSIDE_KEYS) changes none. `pipeline_config` is not followed: a schema change reaches a
key through the resolved config values the key already holds (a new default is a new value).

`library_versions(...)` gives the installed versions of the distributions a stage's output depends on, so
that upgrading transformers rebuilds tokenize, train and evaluate, and leaves scrape alone.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import platform
from pathlib import Path

from tasks.common.io import REPO_ROOT

FOLLOWED = "tasks"  # the top-level project package whose imports are followed
# Leaf modules that cannot change what a stage writes: where its log lines and progress bars go. Left out of
# every key, so a change to logging re-runs nothing; tests/test_layers.py keeps them leaves (they import no
# project module, so nothing that does shape outputs can hide behind them).
OUTSIDE_KEYS = frozenset({"tasks.common.runtime", "tasks.common.progress"})


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), without importing it."""
    base = REPO_ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Project modules named by the import statements of one file (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package_parts[: len(package_parts) - node.level + 1] if node.level else []
            base = ".".join([*parts, *(node.module or "").split(".")]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    # importing a.b.c runs a/__init__.py and a/b/__init__.py too
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    followed = {m for m in with_parents if m == FOLLOWED or m.startswith(FOLLOWED + ".")}
    return followed - OUTSIDE_KEYS


def package_files(package: str) -> set[Path]:
    """Every file of a package folder (code and data), caches excluded; a plain module is itself."""
    init = module_file(package)
    if init is None:
        raise ValueError(f"no project module {package!r} under {REPO_ROOT}")
    if init.name != "__init__.py":
        return {init}
    return {p for p in init.parent.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def dependency_files(package: str) -> list[Path]:
    """The package's own files plus the project modules it imports, transitively; sorted."""
    files = package_files(package)
    todo = [(p, module_name(p)) for p in files if p.suffix == ".py"]
    seen = {m for _, m in todo}
    while todo:
        path, module = todo.pop()
        for dep in imported_modules(path, module):
            dep_file = module_file(dep)
            if dep_file is None or dep in seen:
                continue  # `from tasks.x import name`: `tasks.x.name` is not a module
            seen.add(dep)
            files.add(dep_file)
            todo.append((dep_file, dep))
    return sorted(files)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def code_version(package: str) -> str:
    digest = hashlib.sha256()
    for path in dependency_files(package):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode() + b"\x00" + path.read_bytes())
    return digest.hexdigest()[:12]


def library_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the named distributions ("python" is the interpreter); absent ones say so."""
    versions = {}
    for name in distributions:
        if name == "python":
            versions[name] = platform.python_version()
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_commit() -> str:
    """The project's commit, "-dirty" appended when tracked files differ from it; "unknown" outside git
    (an installed wheel, a copied tree): what a registered model version records as its code."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit
