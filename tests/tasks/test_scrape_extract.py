"""From source to records (tasks/scrape/extract.py), on the fake package (scrape_builders.py): names, kinds
and privacy, every field of a record, content ids, decorators, numpydoc sections and doctest examples, and
code without its docstring that stays valid Python."""

from __future__ import annotations

import ast
import hashlib
import textwrap
from pathlib import Path

import pytest
from scrape_builders import CORE, PKG, scrape

from tasks.scrape.extract import record_id


def test_names_kinds_and_privacy(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    assert {name: r["kind"] for name, r in records.items()} == {
        f"{PKG}.core.documented": "function",
        f"{PKG}.core.Widget": "class",
        f"{PKG}.core.Widget.size": "method",
        f"{PKG}.core.Widget.only_doc": "method",
        f"{PKG}.core.Widget.value": "method",
        f"{PKG}.deco.cached": "function",
        f"{PKG}.sub.helpers.oneliner": "function",
    }
    # the getter comes first in the file and wins over the setter
    assert records[f"{PKG}.core.Widget.value"]["docstring"] == "The value."


def test_include_private(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, include_private=True)
    assert report["rows_out"] == 10
    assert {f"{PKG}.core._private_helper", f"{PKG}.core.Widget.__init__", f"{PKG}.core.Widget._hidden"} < set(
        records
    )


def test_function_record_fields(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    rec = records[f"{PKG}.core.documented"]
    assert rec["id"] == record_id(f"{PKG}.core.documented", rec["code"])
    assert rec["signature"] == "def documented(a, b=2)"
    assert rec["decorators"] == []
    assert rec["docstring"] == "Add two numbers.\n\nMore detail."
    assert (
        rec["sections"]["summary"] == "Add two numbers." and rec["sections"]["description"] == "More detail."
    )
    assert rec["path"] == f"{PKG}/core.py"
    assert (rec["line_start"], rec["line_end"]) == (4, 9)
    assert rec["package_version"] is None
    assert rec["doctests"] == [] and rec["doctest_examples"] == []
    assert rec["code"].startswith('def documented(a, b=2):\n    """Add two numbers.')
    assert rec["code_without_docstring"] == "def documented(a, b=2):\n    return a + b"
    assert rec["provenance"] == {
        "source": "package",
        "location": str(fake_package / "core.py"),
        "package": PKG,
        "package_version": None,
        "commit": None,
        "sha256": hashlib.sha256(CORE.encode()).hexdigest(),
        "lines": [4, 9],
        "license": None,
    }


def test_ids_follow_content_across_runs(fake_package: Path, tmp_path: Path) -> None:
    _, before = scrape(tmp_path, "night1")
    core = fake_package / "core.py"
    core.write_text(core.read_text().replace("return 3", "return 4"))  # edits Widget.size (and Widget)
    _, after = scrape(tmp_path, "night2")
    ids = lambda recs: {name: r["id"] for name, r in recs.items()}  # noqa: E731
    changed = {name for name in before if ids(before)[name] != ids(after)[name]}
    assert changed == {f"{PKG}.core.Widget", f"{PKG}.core.Widget.size"}


def test_decorators_are_part_of_the_code(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    rec = records[f"{PKG}.deco.cached"]
    assert rec["decorators"] == ["traced", "functools.lru_cache(maxsize=None)"]
    assert (rec["line_start"], rec["line_end"]) == (4, 28)  # from the first decorator
    assert rec["code"].startswith("@traced  # a comment between decorators stays in the code\n@functools")
    without = rec["code_without_docstring"]
    assert without == (
        "@traced  # a comment between decorators stays in the code\n"
        "@functools.lru_cache(maxsize=None)\ndef cached(n, scale=3):\n    return n * scale"
    )
    # the Widget.value property keeps its @property too
    assert records[f"{PKG}.core.Widget.value"]["code"].startswith("@property\ndef value(self):")


def test_numpydoc_sections_and_doctest_examples(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    rec = records[f"{PKG}.deco.cached"]
    assert rec["sections"] == {
        "summary": "Cached, with a numpydoc docstring.",
        "description": None,
        "params": [
            {"name": "n", "type": "int", "default": None, "optional": False, "description": "How many."},
            {
                "name": "scale",
                "type": "float",
                "default": "3",
                "optional": True,
                "description": "Multiplier.",
            },
        ],
        "returns": [{"name": "total", "type": "float", "description": "The total."}],
        "examples": ">>> cached(2, scale=1)\n2\n>>> cached(0)\n0",
    }
    assert rec["doctests"] == ["cached(2, scale=1)\n", "cached(0)\n"]
    assert rec["doctest_examples"] == [
        {"source": "cached(2, scale=1)\n", "want": "2\n"},
        {"source": "cached(0)\n", "want": "0\n"},
    ]


def test_method_code_is_dedented_and_parses_without_docstring(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    for rec in records.values():
        ast.parse(rec["code"])
        tree = ast.parse(rec["code_without_docstring"])
        assert ast.get_docstring(tree.body[0]) is None
        assert rec["docstring"].splitlines()[0] not in rec["code_without_docstring"]
    assert records[f"{PKG}.core.Widget.size"]["code_without_docstring"] == "def size(self):\n    return 3"
    # a body that was only a docstring gets `pass`; a docstring sharing its line keeps the rest of it
    assert records[f"{PKG}.core.Widget.only_doc"]["code_without_docstring"] == "def only_doc(self):\n    pass"
    assert records[f"{PKG}.sub.helpers.oneliner"]["code_without_docstring"] == "def oneliner(x): return x"


def test_class_record_and_doctests(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    cls = records[f"{PKG}.core.Widget"]
    assert cls["signature"] == "class Widget(dict)"
    assert cls["doctests"] == ["w = Widget()\n", "w.size()\n"]
    assert cls["doctest_examples"][1] == {"source": "w.size()\n", "want": "3\n"}
    assert records[f"{PKG}.core.Widget.size"]["doctests"] == ["Widget().size()\n"]
    # the class keeps its methods (docstrings included); only its own docstring goes
    without = cls["code_without_docstring"]
    assert without.startswith("class Widget(dict):\n    def __init__(self):")
    assert "A widget." not in without and "Return the size." in without


def test_code_keeps_multiline_strings_that_start_left_of_the_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # textwrap.dedent would leave this method indented (a string line sits at column 0)
    source = textwrap.dedent('''\
        class A:
            def m(self):
                """Doc."""
                return """
        left
        """
        ''')
    root = tmp_path / "site" / PKG
    root.mkdir(parents=True)
    (root / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(root.parent))
    _, records = scrape(tmp_path)
    code = records[f"{PKG}.A.m"]["code_without_docstring"]
    assert code == 'def m(self):\n    return """\nleft\n"""'
    ast.parse(code)
