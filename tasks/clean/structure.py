"""A structural fingerprint of Python code: equal for code that differs only in the names it binds, its
comments, its docstrings and its layout, so the same method under two class names counts once.

Only names the code itself binds are canonicalised (functions, classes, parameters, assigned names,
loop and `with` targets, import aliases, exception names), numbered in order of first appearance. Free
names (builtins, the modules it calls, attributes) keep their spelling: `np.sum(x)` and `np.mean(x)`
are different programs, and canonicalising every identifier would make them one. Constants count.
"""

from __future__ import annotations

import ast
import hashlib

_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "kind"})  # `kind`: the u prefix of u"..." strings
_WITH_DOCSTRING = frozenset({ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})


class _Name(str):
    """An identifier in the token stream, told apart from a constant's repr that happens to look alike."""


def _has_docstring(node: ast.AST) -> bool:
    body = node.body
    return (
        bool(body)
        and type(body[0]) is ast.Expr
        and type(body[0].value) is ast.Constant
        and isinstance(body[0].value.value, str)
    )


_BINDERS = {
    ast.FunctionDef: "name",
    ast.AsyncFunctionDef: "name",
    ast.ClassDef: "name",
    ast.arg: "arg",
    ast.ExceptHandler: "name",
}
_NAME_FIELDS = frozenset({"name", "id", "arg", "asname"})


def _visit(node: ast.AST, out: list, bound: set) -> None:
    """One pass: the node types, fields and values in order, identifiers as `_Name`, bound names noted.
    Hot (every node of every row): type lookups, not isinstance chains."""
    kind = type(node)
    out.append(kind.__name__)
    if kind is ast.Name:
        if type(node.ctx) is not ast.Load:
            bound.add(node.id)
    elif kind is ast.alias:
        bound.add(node.asname or node.name.split(".", 1)[0])
    elif kind in _BINDERS:
        if (name := getattr(node, _BINDERS[kind])) is not None:
            bound.add(name)
    skip_docstring = kind in _WITH_DOCSTRING and _has_docstring(node)
    for field in kind._fields:
        if field in _SKIPPED_FIELDS:
            continue
        value = getattr(node, field, None)
        if isinstance(value, ast.AST):
            _visit(value, out, bound)
        elif type(value) is list:
            out.append("[")
            for item in value[1:] if skip_docstring and field == "body" else value:
                if isinstance(item, ast.AST):
                    _visit(item, out, bound)
                else:  # Global / Nonlocal names
                    out.append(_Name(item))
            out.append("]")
        elif field in _NAME_FIELDS and type(value) is str:
            out.append(_Name(value))
        else:
            out.append(repr(value))


def structural_key(tree: ast.Module) -> str | None:
    """The fingerprint of a parsed module; None for code with nothing but a docstring (nothing to compare).

    Bound names are numbered in order of first appearance, wherever they appear (a use before the
    binding included), so two codes that differ only in those names give the same stream.
    """
    found = structure_and_names(tree)
    return None if found is None else found[0]


def structure_and_names(tree: ast.Module) -> tuple[str, dict[str, str]] | None:
    """(fingerprint, the numbering of the bound names: {"max_evens": "_0", "votes": "_1", ...}); the
    numbering lets the prompt be compared with the names canonicalised too (tasks/clean/dedup.py)."""
    if not tree.body or (len(tree.body) == 1 and _has_docstring(tree)):
        return None
    out: list[str] = []
    bound: set[str] = set()
    _visit(tree, out, bound)
    numbers: dict[str, str] = {}
    canonical = [
        numbers.setdefault(t, f"_{len(numbers)}") if type(t) is _Name and t in bound else t for t in out
    ]
    return hashlib.blake2b("\x1f".join(canonical).encode(), digest_size=16).hexdigest(), numbers
