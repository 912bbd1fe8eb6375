"""The scrape as a whole: every configured source in turn into one `records.jsonl`, plus report.json's
content and report.md.

Ids are content hashes, so the same definition reached twice (a local checkout of the installed package,
a page linked twice under two URLs) is written once; the repeats are counted as `duplicate_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline_config.schema import ExecutorConfig, ScrapeConfig
from tasks.common.io import write_jsonl
from tasks.common.parallel import Executor
from tasks.scrape.local import local_records
from tasks.scrape.package import package_records
from tasks.scrape.report import Tally, markdown
from tasks.scrape.web import web_records


def http_cache_dir(cfg: ScrapeConfig, workspace: Path) -> Path:
    return Path(cfg.web.cache_dir).expanduser() if cfg.web.cache_dir else Path(workspace) / "cache" / "http"


def scrape_sources(
    out_dir: Path, cfg: ScrapeConfig, workspace: Path, executor: ExecutorConfig | None = None
) -> dict:
    """Write `out_dir/records.jsonl` and `out_dir/report.md`; return the report (report.json). `executor`:
    where the files are parsed (tasks/scrape/files.py); the web source is fetched and parsed here."""
    with Executor(executor) as runner:
        return _scrape(out_dir, cfg, workspace, runner)


def _scrape(out_dir: Path, cfg: ScrapeConfig, workspace: Path, runner: Executor) -> dict:
    files, pages = Tally(), Tally()
    pages.definitions = files.definitions  # one count of definitions across sources
    report: dict = {"rows_in": 0, "rows_out": 0, "sources": list(cfg.sources)}
    streams: list[Iterator[dict]] = []
    # every source is located before anything is written: a missing package or folder fails at once
    if "package" in cfg.sources:
        stream, report["package"] = package_records(cfg, files, runner)
        streams.append(stream)
    if "local" in cfg.sources:
        report["local"] = []
        for raw in cfg.local_dirs:
            stream, info = local_records(raw, cfg, files, runner)
            streams.append(stream)
            report["local"].append(info)
    web_info: dict = {}
    if "web" in cfg.sources:
        stream, web_info = web_records(cfg.web, http_cache_dir(cfg, workspace), pages, cfg.include_private)
        streams.append(stream)

    def unique() -> Iterator[dict]:
        seen: set[str] = set()
        for stream in streams:
            for record in stream:
                if record["id"] in seen:
                    files.definitions["duplicate_id"] += 1
                    continue
                seen.add(record["id"])
                yield record

    report["rows_out"] = write_jsonl(Path(out_dir) / "records.jsonl", unique())
    report["rows_in"] = files.files["read"] + pages.files["read"]  # files read and pages fetched
    report.update(files.as_dict())
    if "web" in cfg.sources:
        page_counts = pages.as_dict()
        report["web"] = {"pages": page_counts["files"], **web_info}
        report["warnings"] += page_counts["warnings"]
        if pages.files["read"] == 0:
            report["warnings"].append("the web crawl fetched no page")
    if report["rows_out"] == 0:
        report["warnings"].append("no records: every source was empty, skipped or failed")
    (Path(out_dir) / "report.md").write_text(markdown(report))
    return report
