"""An installed package as a source: located with `importlib.util.find_spec` and never imported, so the
output depends only on the files on disk. Its version and the hash of its `.py` files are in the stage key.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from pipeline_config.schema import ScrapeConfig
from tasks.common.io import hash_path
from tasks.common.parallel import Executor
from tasks.scrape.extract import Origin
from tasks.scrape.files import tree_records
from tasks.scrape.licence import distribution_licence, folder_licence
from tasks.scrape.report import Tally


def package_root(package: str) -> Path:
    """The package's folder (or single module file), found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise ValueError(f"scrape.package {package!r} is not installed")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin)


def distribution(package: str) -> str | None:
    """The installed distribution providing an import name (sklearn -> scikit-learn)."""
    top = package.split(".", 1)[0]
    for dist in importlib.metadata.packages_distributions().get(top, []) + [top]:
        try:
            importlib.metadata.version(dist)
            return dist
        except importlib.metadata.PackageNotFoundError:
            continue
    return None  # e.g. a folder on sys.path that no installer recorded


def package_version(package: str) -> str | None:
    dist = distribution(package)
    return importlib.metadata.version(dist) if dist else None


def package_records(cfg: ScrapeConfig, tally: Tally, executor: Executor) -> tuple[Iterator[dict], dict]:
    """The package's records (lazily) and what the report says about the package."""
    package = cfg.package
    root = package_root(package)
    dist = distribution(package)
    version = importlib.metadata.version(dist) if dist else None
    licence = distribution_licence(dist) if dist else folder_licence(root if root.is_dir() else root.parent)
    parents = package.split(".")[:-1]  # a subpackage ("a.b") keeps the path and name from the top package

    def origin_of(path: Path, rel: str) -> Origin:
        parts = [*parents, *([root.name] if root.is_dir() else []), *rel.removesuffix(".py").split("/")]
        if parts[-1] == "__init__":
            parts.pop()
        rel_path = "/".join([*parents, root.name, rel] if root.is_dir() else [*parents, rel])
        return Origin("package", str(path), rel_path, ".".join(parts), package, version, None, licence)

    info = {"name": package, "distribution": dist, "version": version, "license": licence, "root": str(root)}
    return tree_records(root, origin_of, cfg, tally, executor), info


def package_identity(package: str) -> dict:
    """The installed version and a hash of the package's source files: what the scrape key holds."""
    return {"version": package_version(package), "sources": hash_path(package_root(package), "*.py")}
