"""Scrape an installed package: documented functions, methods and classes from an installed package's source.

The package (`scrape.package`, scikit-learn by default) is located with `importlib.util.find_spec` and
never imported: its `.py` files are read in sorted order and parsed with `ast`, so the output depends only
on the files on disk. Every definition that carries a docstring becomes one record in `records.jsonl`:

    id, name, kind, signature, docstring, code, code_without_docstring, path, line_start, line_end,
    package_version, doctests

`code_without_docstring` is what synthesize asks the model to write back from the docstring's summary, so
it must stay valid Python. Files that cannot be decoded or parsed are counted and skipped.

"""

from __future__ import annotations

import ast
import doctest
import hashlib
import importlib.metadata
import importlib.util
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline_config.schema import ScrapeConfig
from tasks.common.io import hash_path, write_jsonl

KINDS = ("function", "method", "class")
DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class SourceFile:
    """One `.py` file of the package: where it is, its dotted module name and its path for records."""

    path: Path
    module: str
    rel_path: str  # from the package's parent folder, POSIX separators: "sklearn/linear_model/_base.py"


# --- locating the package --------------------------------------------------------------------------------


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


def package_version(package: str) -> str | None:
    """The installed distribution's version; import and distribution names differ (sklearn, scikit-learn)."""
    top = package.split(".", 1)[0]
    for dist in importlib.metadata.packages_distributions().get(top, []) + [top]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None  # e.g. a folder on sys.path that no installer recorded


def source_files(root: Path, package: str, cfg: ScrapeConfig) -> Iterator[SourceFile]:
    """The package's `.py` files in sorted order, minus excluded folders, at most `cfg.max_files`."""
    if root.is_file():  # a single-module distribution
        candidates = [root]
    else:
        # sort on the relative POSIX path so the order (and so `max_files`) is the same on every machine
        candidates = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    excluded = set(cfg.exclude_dirs)
    prefix = package.rsplit(".", 1)[0] + "." if "." in package else ""
    n = 0
    for path in candidates:
        if root.is_dir() and excluded.intersection(path.relative_to(root).parts[:-1]):
            continue
        if cfg.max_files is not None and n >= cfg.max_files:
            return
        n += 1
        rel = path.relative_to(root.parent)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield SourceFile(path, prefix + ".".join(parts), _rel_path(package, rel))


def _rel_path(package: str, rel: Path) -> str:
    # a subpackage ("a.b") is found at .../a/b: its records still carry the path from the top package
    parents = package.split(".")[:-1]
    return "/".join([*parents, rel.as_posix()])


# --- reading one file --------------------------------------------------------------------------------------


def read_module(path: Path) -> tuple[list[str], ast.Module]:
    """Decode (honouring a coding cookie, newlines normalised to "\\n") and parse; raise on failure.

    Returns the source split into lines the way `ast` numbers them, and the tree.
    """
    source = importlib.util.decode_source(path.read_bytes())
    with warnings.catch_warnings():  # invalid escapes in old code only warn; they are not ours to fix
        warnings.simplefilter("ignore")
        tree = ast.parse(source, filename=str(path))
    return source.split("\n"), tree


def walk_definitions(tree: ast.Module) -> Iterator[tuple[DefNode, list[str], str]]:
    """Yield (node, qualname parts, kind) for module- and class-level definitions, in source order.

    Definitions nested in a function are left out: they are not addressable by name and their code is
    already part of the enclosing function's record. Definitions under `if`/`try`/`with` count.
    """

    def visit(parent: ast.AST, scope: list[str], in_class: bool) -> Iterator[tuple[DefNode, list[str], str]]:
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, ast.ClassDef):
                yield node, [*scope, node.name], "class"
                yield from visit(node, [*scope, node.name], True)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield node, [*scope, node.name], "method" if in_class else "function"
            elif isinstance(node, ast.stmt):
                yield from visit(node, scope, in_class)

    return visit(tree, [], False)


def is_private(qualname: list[str]) -> bool:
    """`_x` and dunders (`__init__`: its parameters are documented in the class docstring) are private.

    Only the definition's own name counts: private base classes such as `_BaseKMeans` carry much of the
    public API (`fit_predict`) through inheritance.
    """
    return qualname[-1].startswith("_")


def signature(node: DefNode) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in [*node.bases, *node.keywords])
        return f"class {node.name}({bases})" if bases else f"class {node.name}"
    keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{keyword} {node.name}({ast.unparse(node.args)}){returns}"


def doctest_sources(docstring: str) -> list[str]:
    try:
        return [ex.source for ex in doctest.DocTestParser().get_examples(docstring)]
    except ValueError:  # a malformed example (e.g. no space after ">>>") is documentation, not a failure
        return []


# --- source segments ---------------------------------------------------------------------------------------


def segment_lines(lines: list[str], node: DefNode) -> list[str]:
    """The node's source lines, the first one whole so that every line keeps its original indentation.

    The same text as `ast.get_source_segment(source, node, padded=True)`, sliced from the file's lines that
    were split once: get_source_segment re-splits the whole file character by character on every call,
    which made a full scikit-learn scrape take 20 s instead of a few.
    """
    segment = lines[node.lineno - 1 : node.end_lineno]
    # nothing but indentation precedes a `def`/`class` on its line, so the full first line is the padding
    segment[-1] = _cut(segment[-1], end=node.end_col_offset)
    return segment


def dedent(lines: list[str]) -> str:
    """Remove the definition's own indentation from every line that has it.

    `textwrap.dedent` would stop at a multi-line string whose lines start further left and leave the code
    indented (unparseable); such lines are kept as they are instead.
    """
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    return "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)


def _cut(line: str, start: int | None = None, end: int | None = None) -> str:
    # ast column offsets count UTF-8 bytes, not characters
    return line.encode()[start:end].decode()


def without_docstring(lines: list[str], node: DefNode) -> list[str]:
    """The node's lines with its docstring expression removed, `pass` standing in for an emptied body.

    Works on the docstring's exact span, so `def f(): "doc"` and `"doc"; x = 1` stay valid; a line left
    blank by the removal is dropped, together with the blank line that usually follows a docstring.
    """
    doc = node.body[0]
    first, last = doc.lineno - node.lineno, doc.end_lineno - node.lineno  # indices into `lines`
    before = _cut(lines[first], end=doc.col_offset)
    after = re.sub(r"^\s*;?\s*", "", _cut(lines[last], start=doc.end_col_offset))
    merged = before + ("pass" if len(node.body) == 1 else "") + after
    tail = lines[last + 1 :]
    if not merged.strip():
        if tail and not tail[0].strip():
            tail = tail[1:]
        return lines[:first] + tail
    return [*lines[:first], merged, *tail]


# --- records -----------------------------------------------------------------------------------------------


def make_record(
    src: SourceFile,
    lines: list[str],
    node: DefNode,
    qualname: list[str],
    kind: str,
    docstring: str,
    version: str | None,
) -> dict:
    dotted = ".".join(qualname)
    segment = segment_lines(lines, node)
    return {
        "id": hashlib.sha1(f"{src.rel_path}::{dotted}".encode()).hexdigest()[:16],
        "name": f"{src.module}.{dotted}" if src.module else dotted,
        "kind": kind,
        "signature": signature(node),
        "docstring": docstring,
        "code": dedent(segment),
        "code_without_docstring": dedent(without_docstring(segment, node)),
        "path": src.rel_path,
        "line_start": node.lineno,
        "line_end": node.end_lineno,
        "package_version": version,
        "doctests": doctest_sources(docstring),
    }


def file_records(
    src: SourceFile, lines: list[str], tree: ast.Module, cfg: ScrapeConfig, version: str | None
) -> Iterator[dict]:
    seen: set[str] = set()
    for node, qualname, kind in walk_definitions(tree):
        if not cfg.include_private and is_private(qualname):
            continue
        docstring = ast.get_docstring(node, clean=True)  # clean=True applies inspect.cleandoc
        if not docstring or not docstring.strip():
            continue
        dotted = ".".join(qualname)
        if dotted in seen:  # a property setter or a conditional redefinition: the id must stay unique
            continue
        seen.add(dotted)
        yield make_record(src, lines, node, qualname, kind, docstring, version)


def scrape_package(out_dir: Path, cfg: ScrapeConfig) -> dict:
    """Write `out_dir/records.jsonl` for the installed package `cfg.package`; return the stage report."""
    root = package_root(cfg.package)
    version = package_version(cfg.package)
    files_read = 0
    skipped: list[str] = []
    kinds: Counter = Counter()
    with_doctests = 0

    def records() -> Iterator[dict]:
        nonlocal files_read, with_doctests
        for src in source_files(root, cfg.package, cfg):
            files_read += 1
            try:
                lines, tree = read_module(src.path)
            # ValueError: null bytes in the source; OSError: a dangling symlink
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                skipped.append(src.rel_path)
                continue
            for rec in file_records(src, lines, tree, cfg, version):
                kinds[rec["kind"]] += 1
                with_doctests += bool(rec["doctests"])
                yield rec

    written = write_jsonl(Path(out_dir) / "records.jsonl", records())
    return {
        "rows_in": files_read,  # skipped files included: they were read
        "rows_out": written,
        "files_skipped": len(skipped),
        "skipped_paths": skipped,
        "by_kind": {k: kinds.get(k, 0) for k in KINDS},
        "with_doctests": with_doctests,
        "package": cfg.package,
        "package_version": version,
    }


def package_identity(package: str) -> dict:
    """The installed version and a hash of the package's source files: what the scrape key holds."""
    root = package_root(package)
    return {"version": package_version(package), "sources": hash_path(root, "*.py")}
