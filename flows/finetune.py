"""The `finetune` flow: scrape, base_model, synthesize, datasets, clean, tokenize, train, evaluate, register.

A table of contents, no logic: each line of DAG is one cached, retryable stage task and the stages whose
outputs it reads (tasks/common/stage.py has the contract; flows/runner.py the bookkeeping).
Run: `finetune run --config pipeline_config/offline.yaml`, or the `finetune/nightly` deployment.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.flow_runs import flow_run_name
from flows.runner import StageRunner, report_failure, stage_names
from pipeline_config import load_config
from tasks import (
    base_model,
    clean,
    dataset_sources,
    evaluation,
    registration,
    scrape,
    synthesize,
    tokenization,
    training,
)

DAG = (
    (scrape, ()),
    (base_model, ("scrape",)),  # only a scratch model reads the scraped code (its tokenizer, pretraining)
    (synthesize, ("scrape", "base_model")),  # the base model only when it is the teacher
    (dataset_sources, ()),  # the user's own datasets (`datasets:` in the config)
    # scrape: the held-out doctests; base_model: its tokenizer
    (clean, ("synthesize", "datasets", "scrape", "base_model")),
    (tokenization, ("clean", "base_model")),
    (training, ("tokenize", "base_model")),
    (evaluation, ("tokenize", "train", "base_model", "scrape")),  # scrape: the doctest benchmark
    (registration, ("base_model", "train", "evaluate")),
)
STAGES = stage_names(DAG)  # what --only, --force and `finetune show` accept


@flow(name="finetune", flow_run_name=flow_run_name, on_failure=[report_failure])
def finetune(
    config_path: str = "pipeline_config/offline.yaml",
    only: list[str] | None = None,
    force: list[str] | None = None,
) -> dict:
    runner = StageRunner(load_config(config_path), config_path, flow_run_id=flow_run.get_id() or "local")
    runner.plan_stages(DAG, only, force)  # a refused --only/--force stops here: nothing is written
    runner.remove_leftovers()
    runner.open_mlflow_run()
    try:
        for module, needs in DAG:
            runner(module, needs)
    except BaseException as error:
        runner.finish(error)
        raise
    return runner.finish()
