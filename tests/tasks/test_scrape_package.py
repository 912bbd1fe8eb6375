"""An installed package as a source (tasks/scrape/package.py): a missing one names the key, and the whole
installed scikit-learn is scraped (plausible counts, its version and licence, a few known definitions)."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest
from scrape_builders import read_records

from pipeline_config.schema import ScrapeConfig
from tasks.scrape.collect import scrape_sources


def test_missing_package_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scrape\.package 'no_such_package_xyz' is not installed"):
        scrape_sources(tmp_path, ScrapeConfig(package="no_such_package_xyz"), tmp_path)


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
