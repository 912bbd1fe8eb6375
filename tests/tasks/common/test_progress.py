"""The terminal progress bars of the data stages (tasks/common/progress.py): scrape's file loop and clean's
row loop advance their bar chunk by chunk, to its total, and close it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_config.schema import CleanConfig, ScrapeConfig
from tasks.clean import pipeline
from tasks.scrape import files
from tasks.scrape.collect import scrape_sources


class Recorded:
    """Stands in for Progress and keeps what the stage told it."""

    made: list[Recorded] = []

    def __init__(self, total: int, description: str, key: str | None = None, unit: str = "it") -> None:
        self.total, self.description, self.key, self.unit = total, description, key, unit
        self.updates: list[int] = []
        self.closed = False
        Recorded.made.append(self)

    def update(self, n: int = 1) -> None:
        self.updates.append(n)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Recorded:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def recorded(monkeypatch) -> list[Recorded]:
    Recorded.made = []
    monkeypatch.setattr(pipeline, "Progress", Recorded)
    monkeypatch.setattr(files, "Progress", Recorded)
    return Recorded.made


def test_clean_advances_its_bar_per_chunk_to_the_readable_rows(tmp_path: Path, recorded, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "CHUNK", 2)
    rows = [
        {"id": f"r{i}", "instruction": f"Write function number {i}.", "input": "", "source": "docstring"}
        | {"output": f"def f{i}(a):\n    return a + {i}", "metadata": {}}
        for i in range(4)
    ]
    rows.append(dict(rows[0], id="dup"))  # dropped by dedup, still a row the bar counts
    lines = [json.dumps(r) for r in rows] + ["{not json"]  # quarantined before the row phase
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "out").mkdir()
    cfg = CleanConfig(decontaminate={"humaneval": False, "held_out": False})
    report = pipeline.clean_pairs(tmp_path / "pairs.jsonl", tmp_path / "out", cfg, workers=1)

    [bar] = recorded
    assert report["rows_in"] == 6 and report["rows_out"] == 4
    assert (bar.total, bar.updates, bar.closed) == (5, [2, 2, 1], True)
    assert bar.key == "clean-progress" and bar.unit == "row"


def test_scrape_advances_its_bar_per_chunk_of_files(tmp_path: Path, recorded, monkeypatch) -> None:
    monkeypatch.setattr(files, "FILES_PER_TASK", 2)
    root = tmp_path / "src"
    sources = {
        "a.py": 'def a():\n    """A."""\n',
        "b.py": "def broken(:\n",  # fails to parse: counted
        "c.py": "# Auto-generated, do not edit\nX = 1\n",  # skipped as generated: counted
        "d.py": 'def d():\n    """D."""\n',
        "e.py": 'def e():\n    """E."""\n',
        "tests/test_a.py": "def test_a():\n    pass\n",  # excluded before reading: not in the bar
    }
    for rel, text in sources.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    report = scrape_sources(out, ScrapeConfig(sources=["local"], local_dirs=[str(root)]), tmp_path)

    [bar] = recorded
    assert report["files"]["read"] == 5 and report["rows_out"] == 3
    assert (bar.total, bar.updates, bar.closed) == (5, [2, 2, 1], True)
    assert bar.key == "scrape-progress" and bar.unit == "file" and bar.description == "scrape src"
