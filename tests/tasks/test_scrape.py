"""The scrape stage as a whole (tasks/scrape/collect.py, tasks/scrape/__init__.py): the report's counts over
the fake package (scrape_builders.py), every source into one records.jsonl written once per definition, the
stage key, and the config errors that name the key. The parts have their own modules: test_scrape_extract.py,
test_scrape_files.py, test_scrape_local.py, test_scrape_package.py, test_scrape_web.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from scrape_builders import GOOD, PKG, assert_valid_metric_names, scrape

from pipeline_config import load_config
from pipeline_config.schema import ScrapeConfig


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


def test_package_and_local_together_write_each_definition_once(fake_package: Path, tmp_path: Path) -> None:
    report, records = scrape(tmp_path, sources=["package", "local"], local_dirs=[str(fake_package)])
    # the same files under the same names: the content ids collide and the copies are dropped
    assert report["definitions"]["duplicate_id"] == 7 and len(records) == 7


def test_local_content_and_commit_are_in_the_stage_key(tmp_path: Path) -> None:
    import tasks.scrape as stage

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


def test_web_source_puts_the_day_in_the_stage_key() -> None:
    import tasks.scrape as stage

    cfg = load_config(Path(__file__).resolve().parents[2] / "pipeline_config" / "tiny.yaml")
    web = {"start_urls": ["http://127.0.0.1:9/"]}
    daily = cfg.model_copy(update={"scrape": ScrapeConfig(sources=["web"], web=web)})
    frozen = cfg.model_copy(update={"scrape": ScrapeConfig(sources=["web"], web={**web, "refresh": "never"})})
    assert stage.environment(daily) == {"web_day": datetime.now(UTC).date().isoformat()}
    assert stage.environment(frozen) == {}


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
