"""What the scrape tests share: a tiny fake package (every rule and every kind of bad file) written under a
folder the tests put on sys.path, the stage run over it, and the check that a report's numbers are valid
MLflow metric names. The `fake_package` fixture (conftest.py) writes it into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline_config.schema import ScrapeConfig
from tasks.scrape.collect import scrape_sources

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


FAKE_PACKAGE = {
    "__init__.py": '"""The fake package."""\n',
    "core.py": CORE,
    "broken.py": BROKEN,
    "sub/__init__.py": "",
    "sub/helpers.py": HELPERS,
    "tests/__init__.py": "",
    "tests/test_core.py": TESTS,
    "deco.py": DECORATED,
}

GOOD = 'def fine():\n    """Still scraped."""\n'


def write_fake_package(root: Path) -> Path:
    """FAKE_PACKAGE's files under root (a folder named PKG); returns root."""
    for rel, text in FAKE_PACKAGE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
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
