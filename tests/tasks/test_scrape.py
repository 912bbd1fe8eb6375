"""scrape_package on a tiny fake package built in tmp_path, and on a slice of the installed scikit-learn."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import textwrap
from pathlib import Path

import pytest

from pipeline_config.schema import ScrapeConfig
from tasks.scrape.package import scrape_package

PKG = "scrapefixturepkg"  # a name no installed distribution uses, so its version is None

CORE = '''\
"""Module docstring: not a record."""


def documented(a, b=2):
    """Add two numbers.

    More detail.
    """
    return a + b


def undocumented(x):
    return x


def _private_helper():
    """Private, skipped by default."""
    return 1


class Widget(dict):
    """A widget.

    Examples
    --------
    >>> w = Widget()
    >>> w.size()
    3
    """

    def __init__(self):
        """Dunder: private."""
        super().__init__()

    def size(self):
        """Return the size.

        >>> Widget().size()
        3
        """
        return 3

    def _hidden(self):
        """Private method."""
        return 0

    def only_doc(self):
        """Body is only a docstring."""

    @property
    def value(self):
        """The value."""
        return 1

    @value.setter
    def value(self, v):
        """The setter: same qualname as the getter, so it is dropped."""
        self._v = v
'''

HELPERS = """\
def oneliner(x): "Return x."; return x
"""

TESTS = '''\
def test_something():
    """A documented test: excluded with its folder."""
'''

BROKEN = '''\
def broken(:
    """Never parsed."""
'''


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site" / PKG
    files = {
        "__init__.py": '"""The fake package."""\n',
        "core.py": CORE,
        "broken.py": BROKEN,
        "sub/__init__.py": "",
        "sub/helpers.py": HELPERS,
        "tests/__init__.py": "",
        "tests/test_core.py": TESTS,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.syspath_prepend(str(root.parent))
    return root


def read_records(out_dir: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out_dir / "records.jsonl").read_text().splitlines()]
    return {r["name"]: r for r in rows}


def scrape(tmp_path: Path, **overrides) -> tuple[dict, dict[str, dict]]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    report = scrape_package(out, ScrapeConfig(package=PKG, **overrides))
    return report, read_records(out)


def test_report_counts(fake_package: Path, tmp_path: Path) -> None:
    report, _ = scrape(tmp_path)
    # read: __init__, broken, core, sub/__init__, sub/helpers (tests/ excluded); broken is skipped
    assert report == {
        "rows_in": 5,
        "rows_out": 6,
        "files_skipped": 1,
        "skipped_paths": [f"{PKG}/broken.py"],
        "by_kind": {"function": 2, "method": 3, "class": 1},
        "with_doctests": 2,
        "package": PKG,
        "package_version": None,
    }


def test_names_kinds_and_privacy(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    assert {name: r["kind"] for name, r in records.items()} == {
        f"{PKG}.core.documented": "function",
        f"{PKG}.core.Widget": "class",
        f"{PKG}.core.Widget.size": "method",
        f"{PKG}.core.Widget.only_doc": "method",
        f"{PKG}.core.Widget.value": "method",
        f"{PKG}.sub.helpers.oneliner": "function",
    }
    # the getter comes first in the file and wins over the setter
    assert records[f"{PKG}.core.Widget.value"]["docstring"] == "The value."


def test_include_private(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, include_private=True)
    assert report["rows_out"] == 9
    assert {f"{PKG}.core._private_helper", f"{PKG}.core.Widget.__init__", f"{PKG}.core.Widget._hidden"} < set(
        records
    )


def test_max_files_counts_files_after_exclusion(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, max_files=3)  # __init__, broken, core
    assert (report["rows_in"], report["rows_out"], report["files_skipped"]) == (3, 5, 1)
    assert not any(name.startswith(f"{PKG}.sub") for name in records)


def test_excluded_dirs_follow_config(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, exclude_dirs=["sub"])
    assert report["rows_in"] == 5  # __init__, broken, core, tests/__init__, tests/test_core
    assert f"{PKG}.tests.test_core.test_something" in records
    assert f"{PKG}.sub.helpers.oneliner" not in records


def test_function_record_fields(fake_package: Path, tmp_path: Path) -> None:
    _, records = scrape(tmp_path)
    rec = records[f"{PKG}.core.documented"]
    assert rec["id"] == hashlib.sha1(f"{PKG}/core.py::documented".encode()).hexdigest()[:16]
    assert rec["signature"] == "def documented(a, b=2)"
    assert rec["docstring"] == "Add two numbers.\n\nMore detail."
    assert rec["path"] == f"{PKG}/core.py"
    assert (rec["line_start"], rec["line_end"]) == (4, 9)
    assert rec["package_version"] is None
    assert rec["doctests"] == []
    assert rec["code"].startswith('def documented(a, b=2):\n    """Add two numbers.')
    assert rec["code_without_docstring"] == "def documented(a, b=2):\n    return a + b"


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
    assert records[f"{PKG}.core.Widget.size"]["doctests"] == ["Widget().size()\n"]
    # the class keeps its methods (docstrings included); only its own docstring goes
    without = cls["code_without_docstring"]
    assert without.startswith("class Widget(dict):\n    def __init__(self):")
    assert "A widget." not in without and "Return the size." in without


def test_missing_package_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scrape\.package 'no_such_package_xyz' is not installed"):
        scrape_package(tmp_path, ScrapeConfig(package="no_such_package_xyz"))


def test_installed_sklearn_slice(tmp_path: Path) -> None:
    report = scrape_package(tmp_path, ScrapeConfig(max_files=20))
    records = list(read_records(tmp_path).values())
    assert report["rows_in"] == 20
    assert report["rows_out"] == len(records) > 0
    assert report["package_version"] == importlib.metadata.version("scikit-learn")
    for rec in records:
        ast.parse(rec["code"])
        ast.parse(rec["code_without_docstring"])
        assert rec["name"].startswith("sklearn.") and rec["path"].startswith("sklearn/")
        assert not any(part == "tests" for part in Path(rec["path"]).parts)


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
