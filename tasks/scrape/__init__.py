"""Stage scrape: documented functions, methods and classes, with doctests, from Python source.

Sources (`scrape.sources`): an installed package (default scikit-learn, offline), local folders or git
checkouts, and the web (a polite, cached crawl). Output: `records.jsonl`, one record per documented
definition (see tasks/scrape/extract.py for the fields), and report.json / report.md with the counts.

Key: besides the config and code, the installed package's version and the hash of its `.py` files, and
each local folder's content hash and commit, so an upgrade or an edit is scraped again. The web cannot be
hashed in advance: with `scrape.web.refresh: daily` (default) today's UTC date is in the key, so the
nightly run re-crawls once a day (cheaply: the HTTP cache turns unchanged pages into 304s) and re-runs on
the same day are cache hits; `never` keeps a crawl until the config or code changes.

Run alone: `finetune run --config pipeline_config/offline.yaml --only scrape`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tasks.common.io import workspace_path
from tasks.common.stage import StageResult, StageSpec
from tasks.scrape.collect import scrape_sources
from tasks.scrape.local import local_identity
from tasks.scrape.package import package_identity


def run(cfg, inputs, out_dir, context) -> StageResult:
    # executor: where the files are parsed; in no key, the output is the same
    report = scrape_sources(out_dir, cfg.scrape, workspace_path(cfg), cfg.executor)
    return StageResult(report, {"records": "records.jsonl"})


def environment(cfg) -> dict:
    scrape, env = cfg.scrape, {}
    if "package" in scrape.sources:
        env["package"] = package_identity(scrape.package)
    if "local" in scrape.sources:
        env["local"] = [local_identity(raw) for raw in scrape.local_dirs]
    if "web" in scrape.sources and scrape.web.refresh == "daily":
        env["web_day"] = datetime.now(UTC).date().isoformat()
    return env


SPEC = StageSpec(
    "scrape",
    run,
    "tasks.scrape",
    sections=("scrape",),
    libraries=("python",),  # ast's view of the source is the interpreter's
    environment=environment,
)
