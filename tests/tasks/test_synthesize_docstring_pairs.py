"""tasks.synthesize.docstring_pairs: an instruction pair from every scraped docstring, its summary collapsed
and capped, its id a content hash."""

from __future__ import annotations

from synthesize_fakes import RECORDS

from tasks.synthesize.docstring_pairs import SUMMARY_MAX_CHARS, docstring_pairs, docstring_summary, pair


def test_docstring_summary_first_paragraph_collapsed() -> None:
    doc = """
        Compute the   arithmetic mean
        of the values.

        Parameters
        ----------
        values : list of float
    """
    assert docstring_summary(doc) == "Compute the arithmetic mean of the values."


def test_docstring_summary_capped_and_empty() -> None:
    assert docstring_summary("word " * 500) == ("word " * 120)[:SUMMARY_MAX_CHARS]
    assert len(docstring_summary("word " * 500)) == SUMMARY_MAX_CHARS == 600
    assert docstring_summary("   \n  ") == ""


def test_docstring_pairs_exact() -> None:
    rows = list(docstring_pairs(RECORDS, None))
    assert [(r["instruction"], r["input"], r["output"]) for r in rows] == [
        (
            "Write a Python function `row_norms`: Row-wise (squared) Euclidean norm of X.",
            "def row_norms(X, squared=False):",
            RECORDS[0]["code_without_docstring"],
        ),
        (
            "Write a Python class `StandardScaler`: Standardize features by removing the mean and scaling to "
            "unit variance.",
            "class StandardScaler(TransformerMixin, BaseEstimator):",
            RECORDS[1]["code_without_docstring"],
        ),
        (
            "Write a Python function `fit`: Compute the mean and std to be used for later scaling.",
            "def fit(self, X, y=None):",
            "def fit(self, X, y=None):\n    return self\n",
        ),
    ]
    assert all(r["source"] == "docstring" and r["id"].startswith("docstring-") for r in rows)
    assert len({r["id"] for r in rows}) == 3
    assert rows[0]["metadata"] == {
        "mode": "docstring",
        "verified": None,  # no teacher tests: not run, and marked as such
        "verification": "unverified",
        "qualname": "sklearn.utils.extmath.row_norms",
        "path": "sklearn/utils/extmath.py",
        "lines": [50, 75],
        "package_version": "1.9.1",
    }
    # the id is a content hash: the same pair always gets the same id
    assert (
        rows[0]["id"] == pair(rows[0]["instruction"], rows[0]["input"], rows[0]["output"], "docstring")["id"]
    )


def test_docstring_pairs_limit_and_skips_empty_docstrings() -> None:
    records = [{**RECORDS[0], "docstring": "  \n "}, *RECORDS]
    assert [r["metadata"]["qualname"] for r in docstring_pairs(records, 2)] == [
        "sklearn.utils.extmath.row_norms",
        "sklearn.preprocessing.StandardScaler",
    ]
    assert len(list(docstring_pairs(records, None))) == 3
    assert len(list(docstring_pairs(records, 1))) == 1
