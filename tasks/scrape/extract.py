"""From one module's source to records: definitions found with `ast`, numpydoc sections, doctest examples.

Every module-, class- and `if`/`try`-level function, method and class that carries a docstring becomes one
record (definitions nested in a function are part of that function's code and not addressable by name):

    id, name, kind, signature, decorators, docstring, sections, code, code_without_docstring, path,
    line_start, line_end, package_version, doctests, doctest_examples, provenance

- `id` is derived from content (qualified name + code), so an unchanged function keeps its id across
  nightly runs and later stages can reuse their per-record work.
- `code` starts at the first decorator (the line span too) and is dedented; `code_without_docstring` is
  what synthesize asks a model to write back, so it must stay valid Python.
- `sections`: the docstring parsed as numpydoc by docstring-parser (summary, description, params, returns,
  and the raw Examples section); `doctests` are the `>>>` sources (kept for older readers) and
  `doctest_examples` the same examples with their expected output.
"""

from __future__ import annotations

import ast
import doctest
import hashlib
import importlib.util
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import docstring_parser

KINDS = ("function", "method", "class")
DefNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_NUMPYDOC_HEADER = re.compile(r"^([A-Z][A-Za-z ]*)\n-{3,}[ \t]*$", re.M)
_DOCTESTS = doctest.DocTestParser()


class UnreadableError(ValueError):
    """A file or page whose text is not Python we can read; `reason` is the report's counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Origin:
    """Where a module's text came from; every record of it carries this as provenance."""

    source: str  # "package" | "local" | "web"
    location: str  # the file's absolute path or the page's URL
    path: str  # the record's `path`: "sklearn/linear_model/_base.py", "<dir>/<rel>", or the URL
    module: str  # dotted module name prefixed to qualified names ("" for none)
    package: str | None = None
    package_version: str | None = None
    commit: str | None = None
    license: str | None = None


# --- text and tree ----------------------------------------------------------------------------------------


def decode(data: bytes) -> str:
    """Source text (a coding cookie honoured, newlines normalised to "\\n"); raise UnreadableError."""
    if b"\x00" in data[:8192]:
        raise UnreadableError("binary", "NUL bytes: not a text file")
    try:
        return importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:  # SyntaxError/LookupError: a bad cookie
        raise UnreadableError("not_utf8", str(exc)[:200]) from None


def parse(text: str, filename: str) -> ast.Module:
    """The module's tree; raise UnreadableError telling Python 2 apart from other syntax errors."""
    try:
        with warnings.catch_warnings():  # invalid escapes in old code only warn; they are not ours to fix
            warnings.simplefilter("ignore")
            return ast.parse(text, filename=filename)
    except SyntaxError as exc:
        py2 = "Missing parentheses in call to" in str(exc.msg) or _looks_like_python2(text)
        raise UnreadableError(
            "python2_syntax" if py2 else "syntax_error", f"line {exc.lineno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes late in a file; absurd nesting
        raise UnreadableError("syntax_error", type(exc).__name__) from None


def _looks_like_python2(text: str) -> bool:
    return bool(
        re.search(r"^\s*(print\s+[\"'\w]|exec\s+[\"'\w])|except\s+\w+\s*,\s*\w+\s*:|\bur[\"']", text, re.M)
    )


def walk_definitions(tree: ast.Module) -> Iterator[tuple[DefNode, list[str], str]]:
    """(node, qualname parts, kind) for module- and class-level definitions, in source order."""

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


# --- docstrings ---------------------------------------------------------------------------------------------


def doctest_examples(docstring: str) -> list[dict]:
    try:
        return [{"source": ex.source, "want": ex.want} for ex in _DOCTESTS.get_examples(docstring)]
    except ValueError:  # a malformed example (no space after ">>>") is documentation, not a failure
        return []


def sections(docstring: str) -> dict | None:
    """numpydoc sections; None when docstring-parser cannot read the docstring."""
    try:
        doc = docstring_parser.parse(docstring, style=docstring_parser.Style.NUMPYDOC)
    except docstring_parser.ParseError:
        return None
    return {
        "summary": doc.short_description,
        "description": doc.long_description,
        "params": [
            {
                "name": p.arg_name,
                "type": p.type_name,
                "default": p.default,
                "optional": p.is_optional,
                "description": p.description,
            }
            for p in doc.params
        ],
        "returns": [
            {"name": r.return_name, "type": r.type_name, "description": r.description}
            for r in doc.many_returns
            if not r.is_generator
        ],
        "examples": section_text(docstring, "Examples"),
    }


def section_text(docstring: str, title: str) -> str | None:
    """A numpydoc section's text as written (docstring-parser splits Examples into fragments)."""
    headers = list(_NUMPYDOC_HEADER.finditer(docstring))
    for i, header in enumerate(headers):
        if header.group(1).strip() == title:
            end = headers[i + 1].start() if i + 1 < len(headers) else len(docstring)
            return docstring[header.end() : end].strip("\n") or None
    return None


# --- source segments ---------------------------------------------------------------------------------------


def first_line(node: DefNode) -> int:
    """Where the definition starts: its first decorator, or the `def`/`class` line."""
    return min([node.lineno, *(d.lineno for d in node.decorator_list)])


def segment_lines(lines: list[str], node: DefNode) -> list[str]:
    """The node's source lines from its first decorator, the first line whole (its indentation kept).

    Sliced from the file's lines split once: ast.get_source_segment re-splits the whole file on every
    call, which made a full scikit-learn scrape take 20 s instead of a few.
    """
    segment = lines[first_line(node) - 1 : node.end_lineno]
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
    """The segment's lines with the docstring expression removed, `pass` standing in for an emptied body.

    Works on the docstring's exact span, so `def f(): "doc"` and `"doc"; x = 1` stay valid; a line left
    blank by the removal is dropped, together with the blank line that usually follows a docstring.
    """
    doc, top = node.body[0], first_line(node)
    first, last = doc.lineno - top, doc.end_lineno - top  # indices into `lines`
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


def record_id(name: str, code: str) -> str:
    return hashlib.sha256(f"{name}\x00{code}".encode()).hexdigest()[:16]


def make_record(
    origin: Origin,
    lines: list[str],
    node: DefNode,
    qualname: list[str],
    kind: str,
    docstring: str,
    sha256: str,
) -> dict:
    dotted = ".".join(qualname)
    name = f"{origin.module}.{dotted}" if origin.module else dotted
    segment = segment_lines(lines, node)
    code = dedent(segment)
    examples = doctest_examples(docstring)
    start = first_line(node)
    return {
        "id": record_id(name, code),
        "name": name,
        "kind": kind,
        "signature": signature(node),
        "decorators": [ast.unparse(d) for d in node.decorator_list],
        "docstring": docstring,
        "sections": sections(docstring),
        "code": code,
        "code_without_docstring": dedent(without_docstring(segment, node)),
        "path": origin.path,
        "line_start": start,
        "line_end": node.end_lineno,
        "package_version": origin.package_version,
        "doctests": [ex["source"] for ex in examples],
        "doctest_examples": examples,
        "provenance": {
            "source": origin.source,
            "location": origin.location,
            "package": origin.package,
            "package_version": origin.package_version,
            "commit": origin.commit,
            "sha256": sha256,
            "lines": [start, node.end_lineno],
            "license": origin.license,
        },
    }


def module_records(
    text: str, tree: ast.Module, origin: Origin, sha256: str, include_private: bool, counts: Counter
) -> Iterator[dict]:
    """The records of one parsed module; `counts` gets found / private / no_docstring / duplicate_name /
    docstring_unparsed and, per record, extracted, with_doctests and the kind."""
    lines = text.split("\n")
    seen: set[str] = set()
    for node, qualname, kind in walk_definitions(tree):
        counts["found"] += 1
        if not include_private and is_private(qualname):
            counts["private_skipped"] += 1
            continue
        docstring = ast.get_docstring(node, clean=True)  # clean=True applies inspect.cleandoc
        if not docstring or not docstring.strip():
            counts["without_docstring"] += 1
            continue
        dotted = ".".join(qualname)
        if dotted in seen:  # a property setter or a conditional redefinition: the first one wins
            counts["duplicate_name"] += 1
            continue
        seen.add(dotted)
        record = make_record(origin, lines, node, qualname, kind, docstring, sha256)
        counts["extracted"] += 1
        counts[f"kind:{kind}"] += 1
        counts["with_doctests"] += bool(record["doctests"])
        counts["docstring_unparsed"] += record["sections"] is None
        yield record
