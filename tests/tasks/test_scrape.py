"""The scrape stage on files: a tiny fake package built in tmp_path (every rule and every kind of bad file),
local folders and git checkouts, and the whole installed scikit-learn (counts and a few known functions).
The web source is tested in test_scrape_web.py."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_config.schema import ScrapeConfig
from tasks.scrape.collect import scrape_sources
from tasks.scrape.extract import record_id

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

DECORATED = '''\
import functools


@traced  # a comment between decorators stays in the code
@functools.lru_cache(maxsize=None)
def cached(n, scale=3):
    """Cached, with a numpydoc docstring.

    Parameters
    ----------
    n : int
        How many.
    scale : float, default=3
        Multiplier.

    Returns
    -------
    total : float
        The total.

    Examples
    --------
    >>> cached(2, scale=1)
    2
    >>> cached(0)
    0
    """
    return n * scale
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
        "deco.py": DECORATED,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    monkeypatch.syspath_prepend(str(root.parent))
    return root


def assert_valid_metric_names(report: dict) -> None:
    """The runner logs a report's numbers as MLflow metrics: a reason MLflow rejects would fail the stage."""
    from mlflow.utils.validation import _validate_metric_name

    from flows.tracking import numeric_metrics

    names = numeric_metrics("scrape", report)
    assert names
    for name in names:
        _validate_metric_name(name)


def read_records(out_dir: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out_dir / "records.jsonl").read_text().splitlines()]
    return {r["name"]: r for r in rows}


def scrape(tmp_path: Path, name: str = "out", **overrides) -> tuple[dict, dict[str, dict]]:
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    report = scrape_sources(out, ScrapeConfig(**{"package": PKG, **overrides}), workspace=tmp_path)
    return report, read_records(out)


def test_report_counts(fake_package: Path, tmp_path: Path) -> None:
    report, _ = scrape(tmp_path)
    # seen: 8 files; tests/ excluded (2); read: __init__, broken, core, deco, sub/__init__, sub/helpers
    assert report["rows_in"] == 6 and report["rows_out"] == 7
    assert report["files"] == {
        "seen": 8,
        "read": 6,
        "parsed": 5,
        "skipped": {"excluded_dir:tests": 2},
        "failed": {"syntax_error": 1},
        "failed_examples": {"syntax_error": [f"{PKG}/broken.py"]},
    }
    assert report["definitions"] == {
        "found": 12,
        "private_skipped": 3,  # _private_helper, __init__, _hidden
        "without_docstring": 1,  # undocumented
        "duplicate_name": 1,  # the property setter
        "duplicate_id": 0,
        "with_docstrings": 7,
        "with_doctests": 3,
        "docstring_unparsed": 0,
        "by_kind": {"function": 3, "method": 3, "class": 1},
    }
    assert report["package"] == {
        "name": PKG,
        "distribution": None,
        "version": None,
        "license": None,
        "root": str(fake_package),
    }
    summary = (tmp_path / "out" / "report.md").read_text()
    assert "# scrape: 7 records from package" in summary and "| syntax_error | 1 |" in summary
    assert_valid_metric_names(report)


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


def test_max_files_counts_files_after_exclusion(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, max_files=3)  # __init__, broken, core
    assert (report["rows_in"], report["rows_out"], report["files"]["failed"]) == (3, 5, {"syntax_error": 1})
    assert report["files"]["skipped"] == {"excluded_dir:tests": 2, "over_max_files": 3}
    assert not any(name.startswith((f"{PKG}.sub", f"{PKG}.deco")) for name in records)


def test_skip_rules_follow_config(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, exclude_dirs=["sub"], exclude_files=[])
    assert report["files"]["skipped"] == {"excluded_dir:sub": 2}
    assert f"{PKG}.tests.test_core.test_something" in records
    assert f"{PKG}.sub.helpers.oneliner" not in records
    # with the default file rule, a test module outside a tests/ folder is still left out
    report, records = scrape(tmp_path, "defaults", exclude_dirs=["sub"])
    assert report["files"]["skipped"] == {"excluded_dir:sub": 2, "excluded_file": 1}
    assert f"{PKG}.tests.test_core.test_something" not in records


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


def test_missing_package_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scrape\.package 'no_such_package_xyz' is not installed"):
        scrape_sources(tmp_path, ScrapeConfig(package="no_such_package_xyz"), tmp_path)


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


# --------------------------------------------------------------------------------------------------------
# Bad input: each counted with its reason, never a crash
# --------------------------------------------------------------------------------------------------------

GOOD = 'def fine():\n    """Still scraped."""\n'


def test_bad_files_are_counted_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site" / PKG
    (root / "sub").mkdir(parents=True)
    (root / "good.py").write_text(GOOD)
    (root / "latin1.py").write_bytes('def f():\n    """Caf\xe9."""\n'.encode("latin-1"))  # no coding cookie
    cookie = '# -*- coding: latin-1 -*-\ndef g():\n    """Caf\xe9, declared."""\n'
    (root / "declared.py").write_bytes(cookie.encode("latin-1"))  # valid: the cookie says how to read it
    (root / "py2.py").write_text('def old():\n    """Python 2."""\n    print "hello"\n')
    (root / "huge.py").write_text(GOOD + "#" * 2000)
    (root / "binary.py").write_bytes(b"\x7fELF\x00\x01\x02" + bytes(range(256)))
    (root / "generated.py").write_text("# Generated by protoc. DO NOT EDIT!\n" + GOOD)
    (root / "sub" / "loop").symlink_to("..", target_is_directory=True)  # a folder linking to its parent
    os.symlink("self.py", root / "self.py")  # a file linking to itself
    os.symlink("nowhere.py", root / "dangling.py")
    monkeypatch.syspath_prepend(str(root.parent))
    report, records = scrape(tmp_path, max_file_bytes=1000)
    assert set(records) == {f"{PKG}.good.fine", f"{PKG}.declared.g"}
    assert records[f"{PKG}.declared.g"]["docstring"] == "Caf\xe9, declared."
    files = report["files"]
    assert files["failed"] == {
        "binary": 1,
        "broken_symlink": 1,
        "not_utf8": 1,
        "python2_syntax": 1,
        "symlink_loop": 2,
    }
    assert files["skipped"] == {"generated": 1, "too_large": 1}
    assert sorted(files["failed_examples"]["symlink_loop"]) == ["self.py", "sub/loop"]
    assert (files["seen"], files["read"], files["parsed"]) == (10, 7, 2)
    assert_valid_metric_names(report)


def test_an_empty_package_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "site" / PKG
    root.mkdir(parents=True)
    (root / "README.txt").write_text("no code here")
    monkeypatch.syspath_prepend(str(root.parent))
    report, records = scrape(tmp_path)
    assert records == {} and report["rows_out"] == 0
    assert report["warnings"] == [
        f"{root} holds no .py files",
        "no records: every source was empty, skipped or failed",
    ]


# --------------------------------------------------------------------------------------------------------
# Local folders and git checkouts
# --------------------------------------------------------------------------------------------------------

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


def test_package_and_local_together_write_each_definition_once(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, sources=["package", "local"], local_dirs=[str(fake_package)])
    # the same files under the same names: the content ids collide and the copies are dropped
    assert report["definitions"]["duplicate_id"] == 7 and len(records) == 7


def test_local_content_and_commit_are_in_the_stage_key(tmp_path: Path) -> None:
    import tasks.scrape as stage
    from pipeline_config import load_config

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "m.py").write_text(GOOD)
    cfg = load_config(Path(__file__).resolve().parents[2] / "pipeline_config" / "tiny.yaml")
    cfg = cfg.model_copy(update={"scrape": ScrapeConfig(sources=["local"], local_dirs=[str(folder)])})
    before = stage.SPEC.key(cfg, {})
    assert stage.SPEC.key(cfg, {}) == before
    (folder / "m.py").write_text(GOOD + "\n# edited\n")
    assert stage.SPEC.key(cfg, {}) != before
    assert stage.environment(cfg)["local"][0]["commit"] is None


def test_config_names_the_key_that_is_missing() -> None:
    with pytest.raises(
        ValidationError, match=r"scrape\.sources has 'local': list the folders in scrape\.local_dirs"
    ):
        ScrapeConfig(sources=["local"])
    with pytest.raises(
        ValidationError, match=r"scrape\.web\.start_urls is set but 'web' is not in scrape\.sources"
    ):
        ScrapeConfig(web={"start_urls": ["https://example.org/"]})
    with pytest.raises(ValidationError, match=r"must be http\(s\) URLs"):
        ScrapeConfig(sources=["web"], web={"start_urls": ["ftp://example.org/"]})
    with pytest.raises(ValidationError, match="not a regular expression"):
        ScrapeConfig(exclude_files=[], generated_markers=["("])
    from tasks.scrape.local import local_root

    with pytest.raises(ValueError, match=r"scrape\.local_dirs: '/no/such/folder' is not a folder"):
        local_root("/no/such/folder")


# --------------------------------------------------------------------------------------------------------
# The installed scikit-learn, whole
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_scrape(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, dict]]:
    out = tmp_path_factory.mktemp("sklearn")
    report = scrape_sources(out, ScrapeConfig(), workspace=out)
    return report, read_records(out)


def test_sklearn_counts_are_plausible(sklearn_scrape) -> None:
    report, records = sklearn_scrape
    assert report["package"]["version"] == importlib.metadata.version("scikit-learn")
    assert report["package"]["license"] == "BSD-3-Clause"
    files, defs = report["files"], report["definitions"]
    assert 600 <= files["seen"] <= 750
    assert 240 <= files["read"] == files["parsed"] <= 320 and files["failed"] == {}
    assert 250 <= files["skipped"]["excluded_dir:tests"] <= 400
    assert 1500 <= report["rows_out"] == len(records) <= 2100
    assert 480 <= defs["with_doctests"] <= 680
    assert all(defs["by_kind"][k] > 300 for k in ("function", "method", "class"))
    assert len({r["id"] for r in records.values()}) == len(records)
    for rec in records.values():
        assert rec["name"].startswith("sklearn.") and rec["path"].startswith("sklearn/")
        assert not {"tests", "externals"} & set(Path(rec["path"]).parts)


def test_sklearn_known_function(sklearn_scrape) -> None:
    _, records = sklearn_scrape
    rec = records["sklearn.metrics._classification.accuracy_score"]
    assert rec["signature"] == "def accuracy_score(y_true, y_pred, *, normalize=True, sample_weight=None)"
    assert rec["decorators"][0].startswith("validate_params(")
    assert rec["code"].startswith("@validate_params(")
    sections = rec["sections"]
    assert sections["summary"] == "Accuracy classification score."
    assert [p["name"] for p in sections["params"]] == ["y_true", "y_pred", "normalize", "sample_weight"]
    assert sections["params"][2] == {
        "name": "normalize",
        "type": "bool",
        "default": "True",
        "optional": True,
        "description": "If ``False``, return the number of correctly classified samples.\n"
        "Otherwise, return the fraction of correctly classified samples.",
    }
    assert [(r["name"], r["type"]) for r in sections["returns"]] == [("score", "float")]
    assert {"source": "accuracy_score(y_true, y_pred)\n", "want": "0.5\n"} in rec["doctest_examples"]
    assert {"source": "accuracy_score(y_true, y_pred, normalize=False)\n", "want": "2.0\n"} in rec[
        "doctest_examples"
    ]
    source = Path(rec["provenance"]["location"])
    assert rec["provenance"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    lines = source.read_text().split("\n")[rec["line_start"] - 1 : rec["line_end"]]
    assert lines[0].startswith("@validate_params(") and lines[-1].strip().startswith("return ")


def test_sklearn_known_class_and_method(sklearn_scrape) -> None:
    _, records = sklearn_scrape
    cls = records["sklearn.linear_model._base.LinearRegression"]
    assert cls["kind"] == "class"
    assert cls["signature"] == "class LinearRegression(RegressorMixin, MultiOutputLinearModel)"
    assert [p["name"] for p in cls["sections"]["params"]][:2] == ["fit_intercept", "copy_X"]
    assert any(
        ex["source"] == "reg.score(X, y)\n" and ex["want"] == "1.0\n" for ex in cls["doctest_examples"]
    )
    fit = records["sklearn.linear_model._base.LinearRegression.fit"]
    assert fit["kind"] == "method"
    assert fit["signature"] == "def fit(self, X, y, sample_weight=None)"
    assert fit["decorators"] == ["_fit_context(prefer_skip_nested_validation=True)"]
    assert [r["name"] for r in fit["sections"]["returns"]] == ["self"]
