"""Stage scrape: documented functions, methods and classes, with doctests, from Python source.

Output: `records.jsonl` (id, name, kind, signature, docstring, code, code_without_docstring, path,
line_start, line_end, package_version, doctests). The key holds the package's version and a hash of its
source files, so an upgrade or a local edit of the scraped package is scraped again.

Run alone: `finetune run --config pipeline_config/offline.yaml --only scrape`.
"""

from __future__ import annotations

from tasks.common.prefect import stage_task
from tasks.common.stage import StageResult, StageSpec
from tasks.scrape.package import package_identity, scrape_package


def run(cfg, inputs, out_dir, context) -> StageResult:
    return StageResult(scrape_package(out_dir, cfg.scrape), {"records": "records.jsonl"})


SPEC = StageSpec(
    "scrape",
    run,
    "tasks.scrape",
    sections=("scrape",),
    libraries=("python",),  # ast's view of the source is the interpreter's
    environment=lambda cfg: package_identity(cfg.scrape.package),
)
TASK = stage_task(SPEC)
