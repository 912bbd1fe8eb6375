"""Self-Instruct (Wang et al., 2022, as Code Alpaca ran it): a teacher is shown a few tasks from a
growing pool and asked for a new one: instruction, input, a Python solution and tests (asserts).

The pool starts as the project's own seed tasks (tasks/synthesize/data/code_seed_tasks.jsonl: Python and
scikit-learn tasks, each with tests that pass); each prompt mixes seed tasks and tasks generated in earlier
rounds, 6 + 2 of 8 as in Self-Instruct, scaled to `examples_per_prompt`. Replies are parsed however the
teacher dresses them (parsing.py) and screened (filters.py): Self-Instruct's length, blacklist and
first-character filters, execution of the solution against its tests in the sandbox, and ROUGE-L novelty
against every pooled instruction. A kept task joins the pool, so later rounds see it and must differ from it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pipeline_config.schema import SelfInstructConfig, VerifyConfig
from tasks.common.filtering import Filtered
from tasks.common.io import iter_jsonl
from tasks.common.teacher import Teacher
from tasks.synthesize.docstring_pairs import pair
from tasks.synthesize.filters import screen, tasks_of_replies
from tasks.synthesize.novelty import NoveltyIndex

SEED_TASKS = Path(__file__).parent / "data" / "code_seed_tasks.jsonl"
SEED_FIELDS = ("id", "instruction", "output", "tests")
GENERATED_SHARE = 2 / 8  # of the in-context tasks, once generated ones exist (Self-Instruct: 2 of 8)

PROMPT_HEAD = (
    "Here are some Python programming tasks. Each has an instruction, a solution and tests (assert "
    "statements that check the solution).\n\n"
)


def format_task(i: int, task: Mapping) -> str:
    """One in-context task: instruction, solution, tests. A task's input is not shown (its tests hold the
    example values): after an "Input:" line a small teacher answers with an "Output:" value instead of code
    and writes no tests (SmolLM2-135M did so in 19 of 19 tasks; without it, 1 of 6 lacked tests). The code
    is labelled "Solution:" rather than Self-Instruct's "Output:" for the same reason. The parser still
    reads an input a teacher writes."""
    return (
        f"### Task {i}\nInstruction: {task['instruction']}\n"
        f"Solution:\n```python\n{task['output'].strip()}\n```\n"
        f"Tests:\n```python\n{task.get('tests', '').strip()}\n```\n"
    )


def self_instruct_prompt(examples: list[Mapping]) -> str:
    """The examples, then the open next task: a completion model continues after "Instruction:", a chat
    model answers the request (parsing.parse_tasks reads both)."""
    n = len(examples) + 1
    shown = "\n".join(format_task(i + 1, t) for i, t in enumerate(examples))
    return (
        f"{PROMPT_HEAD}{shown}\nWrite task {n}: a new task, different from the ones above, in exactly the "
        f"same format.\n\n### Task {n}\nInstruction:"
    )


def load_seed_tasks(path: Path) -> list[dict]:
    tasks = list(iter_jsonl(path))
    if not tasks:
        raise ValueError(f"synthesize.self_instruct.seed_tasks: {path} holds no tasks")
    for n, task in enumerate(tasks, 1):
        if missing := [f for f in SEED_FIELDS if not task.get(f)]:
            raise ValueError(f"synthesize.self_instruct.seed_tasks: task {n} of {path} lacks {missing}")
    return tasks


def pick_examples(rng: random.Random, seeds: list[dict], generated: list[dict], k: int) -> list[dict]:
    """k in-context tasks: a share of generated ones once there are any (at least one), the rest seeds;
    shuffled so the position does not tell which is which."""
    n_generated = min(len(generated), max(1, round(k * GENERATED_SHARE))) if generated and k > 1 else 0
    examples = rng.sample(seeds, min(k - n_generated, len(seeds))) + rng.sample(generated, n_generated)
    rng.shuffle(examples)
    return examples


def self_instruct(
    teacher: Teacher, cfg: SelfInstructConfig, verify: VerifyConfig, seed: int
) -> tuple[list[dict], Counter, Filtered]:
    """(kept tasks, counts, everything filtered: kept and rejected rows with their reasons)."""
    seeds = load_seed_tasks(Path(cfg.seed_tasks) if cfg.seed_tasks else SEED_TASKS)
    rng = random.Random(seed)
    index = NoveltyIndex(cfg.max_similarity, [t["instruction"] for t in seeds])
    result = Filtered()
    counts: Counter = Counter()
    for round_no in range(cfg.num_rounds):
        shown = [
            pick_examples(rng, seeds, result.kept, cfg.examples_per_prompt)
            for _ in range(cfg.prompts_per_round)
        ]
        replies = teacher.generate([self_instruct_prompt(examples) for examples in shown])
        counts["prompts"] += len(shown)
        candidates = []
        # a completion model may go on to further tasks after the one asked for: each complete one is a
        # candidate (as in Self-Instruct), the one the token limit cut is counted as truncated
        for examples, tasks in tasks_of_replies(shown, replies, "self_instruct", counts, result):
            candidates += [
                pair(
                    task.instruction,
                    task.input,
                    task.solution,
                    "self_instruct",
                    mode="self_instruct",
                    round=round_no,
                    tests=task.tests,
                    examples=[t.get("id") for t in examples],
                )
                for task in tasks
            ]
        screen(candidates, cfg, verify, index, into=result)
    counts["kept"] = len(result.kept)
    return result.kept, counts, result
