"""Stage synthesize: instruction/response pairs from the scraped source.

Generators, each writing the same record schema to `pairs.jsonl` (`id, instruction, input, output, source,
metadata`): docstring back-translation (docstring_pairs.py, no teacher), and with a teacher Self-Instruct
(self_instruct.py) and OSS-Instruct (oss_instruct.py), whose tasks are parsed (parsing.py), screened
(filters.py: Self-Instruct's filters, ROUGE-L novelty in novelty.py) and run against their own tests in
the sandbox (verify.py). The teacher backends are in tasks/common/teacher.

The key holds the base model's key only when the teacher is the pipeline's own base model: the student's
training settings never change what was synthesized. Every finished teacher call is kept in
`<workspace>/teacher_cache/` (unless `synthesize.teacher.cache: false`), so a re-run pays only for calls never
made; the report's `teacher` block counts requests, tokens, retries, failures, cache hits and budget stops.

Run alone: `finetune run --config pipeline_config/offline.yaml --only synthesize`.
"""

from __future__ import annotations

from pathlib import Path

from tasks.common import sandbox
from tasks.common.io import hash_path, workspace_path
from tasks.common.models import gpu_resource, pick_device, resolve_precision
from tasks.common.parallel import stage_executor
from tasks.common.stage import StageResult, StageSpec
from tasks.common.teacher import is_remote, make_teacher
from tasks.synthesize.pairs import synthesize_pairs, teacher_modes
from tasks.synthesize.report import write_report_md

TEACHER_CACHE = "teacher_cache"  # under the workspace: every finished teacher call, shared by all keys


def teacher_is_base(cfg) -> bool:
    s = cfg.synthesize
    return bool(teacher_modes(s)) and s.teacher.backend == "local" and s.teacher.model == "base"


def run(cfg, inputs, out_dir, context) -> StageResult:
    teacher, backend = None, None
    if teacher_modes(cfg.synthesize) and cfg.synthesize.verify.enabled and cfg.executor.backend == "local":
        backend = sandbox.resolve(cfg.sandbox.backend)  # before the teacher's minutes, not after them
    if teacher_modes(cfg.synthesize):
        base = str(inputs["base_model"].file("model_dir")) if teacher_is_base(cfg) else None
        # outside the stage folders, so that a killed attempt, a forced re-run or a new key (another seed
        # task file, another scrape) asks the teacher only what it has never answered (teacher.cache)
        cache_dir = workspace_path(cfg) / TEACHER_CACHE
        teacher = make_teacher(cfg.synthesize.teacher, base, cfg.seed, cache_dir=cache_dir)
    try:
        # where verification runs the teacher's code, and in which sandbox
        with stage_executor(cfg.executor), sandbox.stage_backend(cfg.sandbox.backend):
            report = synthesize_pairs(
                inputs["scrape"].file("records"), out_dir, cfg.synthesize, teacher, cfg.seed
            )
    finally:
        if teacher is not None:
            teacher.close()
    if backend is not None:
        report["sandbox"] = {"backend": backend, "isolation": sandbox.describe(backend)}
    elif teacher_modes(cfg.synthesize) and cfg.synthesize.verify.enabled:  # on Dask: each worker's own
        report["sandbox"] = {"backend": cfg.sandbox.backend, "isolation": "resolved by each Dask worker"}
    write_report_md(out_dir, report)  # for people: a Prefect artifact and an MLflow file
    return StageResult(report, {"pairs": "pairs.jsonl", "rejected": "rejected.jsonl"})


def uses(cfg) -> tuple[str, ...]:
    return ("scrape", "base_model") if teacher_is_base(cfg) else ("scrape",)


def environment(cfg) -> dict:
    """Path inputs named in the config are keyed by content: seed tasks (the default file is part of the
    package) and a local teacher read from a folder; a local teacher's precision as resolved here."""
    s = cfg.synthesize
    facts = {"seed_tasks": hash_path(s.self_instruct.seed_tasks)} if s.self_instruct.seed_tasks else {}
    if teacher_modes(s) and s.teacher.backend == "local":
        facts["teacher_precision"] = resolve_precision(s.teacher.precision, pick_device())
        if Path(s.teacher.model).is_dir():
            facts["teacher"] = hash_path(s.teacher.model)
    return facts


def resources(cfg) -> tuple[str, ...]:
    """The scarce things this stage holds while it runs (Prefect global concurrency limits): the teacher
    endpoint, or the GPU a local teacher generates on; the sandbox when teacher-written code is run."""
    s = cfg.synthesize
    if not teacher_modes(s):
        return ()
    held = ("teacher",) if is_remote(s.teacher.backend) else gpu_resource()
    return held + (("sandbox",) if s.verify.enabled else ())


SPEC = StageSpec(
    "synthesize",
    run,
    "tasks.synthesize",
    sections=("synthesize", "seed"),
    libraries=("rouge-score", "torch", "transformers", "tokenizers"),  # the local teacher's generations
    environment=environment,
    uses=uses,
    retries=2,  # only transient failures (a dropped connection, a teacher that stayed busy) are retried
    resources=resources,
)
