"""The `finetune` flow: scrape -> synthesize -> clean -> tokenize -> train -> evaluate -> register.

A table of contents, no logic: each line is one cached, retryable stage task (see tasks/stage.py).
Run: `finetune run --config pipeline_config/offline.yaml`, or the `finetune/nightly` deployment.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.runner import StageRunner
from pipeline_config import load_config
from tasks import clean, evaluation, registration, scrape, synthesize, tokenization, training


@flow(name="finetune")
def finetune(
    config_path: str = "pipeline_config/offline.yaml",
    only: list[str] | None = None,
    force: list[str] | None = None,
) -> dict:
    cfg = load_config(config_path)
    stage = StageRunner(cfg, config_path, only, force, flow_run_id=flow_run.get_id() or "local")
    try:
        scraped = stage(scrape, {})
        synthesized = stage(synthesize, {"scrape": scraped})
        cleaned = stage(clean, {"synthesize": synthesized})
        tokenized = stage(tokenization, {"clean": cleaned, "scrape": scraped})
        trained = stage(training, {"tokenize": tokenized})
        evaluated = stage(evaluation, {"tokenize": tokenized, "train": trained})
        stage(registration, {"train": trained, "evaluate": evaluated})
    except BaseException as error:
        stage.finish(error)
        raise
    return stage.finish()
