"""Self-Instruct (seeds/001): a teacher is shown a few tasks sampled from a growing pool (seeded with
the code tasks in tasks/synthesize/data) and asked for a new one. A candidate is kept when it parses into
instruction/input/output and passes the filters (tasks.common.filtering): ROUGE-L novelty against every
pooled instruction under `self_instruct.max_similarity`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from pipeline_config.schema import SelfInstructConfig
from tasks.common.code_blocks import first_python_block
from tasks.common.filtering import Filter, Filtered, apply_filters
from tasks.common.io import iter_jsonl
from tasks.common.teacher import Teacher
from tasks.synthesize.docstring_pairs import pair

SEED_TASKS = Path(__file__).parent / "data" / "code_seed_tasks.jsonl"

PROMPT_HEAD = (
    "Below are programming tasks, each with an instruction, an optional input and a Python solution. "
    "Write one new task that is different from all of them, in the same format.\n\n"
)
TASK_RE = re.compile(
    r"Instruction:\s*(?P<instruction>.+?)\s*Input:\s*(?P<input>.*?)\s*Output:\s*(?P<output>.+)", re.DOTALL
)


def format_task(i: int, task: Mapping) -> str:
    return (
        f"Task {i}\nInstruction: {task['instruction']}\nInput: {task.get('input', '')}\n"
        f"Output:\n{task['output']}\n"
    )


def self_instruct_prompt(examples: list[Mapping]) -> str:
    shown = "###\n".join(format_task(i + 1, t) for i, t in enumerate(examples))
    return f"{PROMPT_HEAD}{shown}###\nTask {len(examples) + 1}\nInstruction:"


def parse_task(completion: str) -> dict | None:
    text = completion if completion.lstrip().startswith("Instruction:") else f"Instruction: {completion}"
    text = text.split("\n###", 1)[0]  # the model may go on to write the next task
    match = TASK_RE.search(text)
    if not match or not match["instruction"].strip() or not match["output"].strip():
        return None
    output = match["output"].strip()
    return {
        "instruction": match["instruction"].strip(),
        "input": match["input"].strip(),
        "output": first_python_block(output).strip(),
    }


def novelty_filter(pool: list[dict], max_similarity: float) -> Filter:
    """Drop a task whose instruction's ROUGE-L F1 against any pooled instruction reaches the bound.

    Stateful like dedup: a kept task joins the pool, so later candidates must differ from it too. The
    similarity found is written to the row's metadata, where it stays as provenance.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])

    def check(row: dict) -> tuple[bool, str | None]:
        similarity = max(scorer.score(t["instruction"], row["instruction"])["rougeL"].fmeasure for t in pool)
        row["metadata"]["max_similarity"] = round(similarity, 4)
        if similarity >= max_similarity:
            return False, "too_similar"
        pool.append(row)
        return True, None

    return Filter("novelty", ("too_similar",), check)


def self_instruct(teacher: Teacher, cfg: SelfInstructConfig, seed: int) -> tuple[list[dict], Counter]:
    seed_path = Path(cfg.seed_tasks) if cfg.seed_tasks else SEED_TASKS
    pool = list(iter_jsonl(seed_path))
    if not pool:
        raise ValueError(f"synthesize.self_instruct.seed_tasks: {seed_path} holds no tasks")
    rng = random.Random(seed)
    filters = [novelty_filter(pool, cfg.max_similarity)]
    result = Filtered()
    generated = unparseable = 0
    for round_no in range(cfg.num_rounds):
        prompts = [
            self_instruct_prompt(rng.sample(pool, min(cfg.examples_per_prompt, len(pool))))
            for _ in range(cfg.prompts_per_round)
        ]
        candidates = []
        for completion in teacher.generate(prompts):
            generated += 1
            task = parse_task(completion)
            if task is None:
                unparseable += 1
                continue
            candidates.append(
                pair(task["instruction"], task["input"], task["output"], "self_instruct", round=round_no)
            )
        apply_filters(candidates, filters, into=result)
    counts = Counter(generated=generated, unparseable=unparseable, kept=len(result.kept), **result.counts)
    return result.kept, counts
