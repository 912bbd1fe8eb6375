"""OSS-Instruct (Magicoder, Wei et al., 2023): each request shows the teacher 1-15 consecutive lines of real
code, drawn from the scrape stage's records (scikit-learn by default), and asks for a self-contained
problem inspired by them, its solution and tests. The data stays anchored in the scraped library instead
of drifting toward what the teacher already likes to write.

A strong teacher gets Magicoder's zero-shot prompt (`examples_per_prompt: 0`); by default the request first
shows worked examples (tasks/synthesize/data/oss_examples.jsonl: snippet, problem, solution, tests) in the
same three sections, without which a small local teacher rarely produces the format at all.

Replies go through the same parser and screening as Self-Instruct's (parsing.py, filters.py): length,
blacklist and first-character filters, execution in the sandbox, ROUGE-L novelty between problems and
against the worked examples' problems (when shown: a small teacher sometimes copies one). Each
record keeps where its seed snippet came from: the scraped record's id, file and line range (the held-out
split groups rows by that file, so a problem inspired by held-out code is held out with it).
"""

from __future__ import annotations

import random
import textwrap
from collections import Counter
from pathlib import Path

from pipeline_config.schema import OssInstructConfig, VerifyConfig
from tasks.common.filtering import Filtered
from tasks.common.io import iter_jsonl
from tasks.common.teacher import Teacher
from tasks.synthesize.docstring_pairs import pair
from tasks.synthesize.filters import screen, tasks_of_replies
from tasks.synthesize.novelty import NoveltyIndex

# Magicoder's own prompt (zero-shot: a strong teacher follows it), with a third section for the tests
MAGICODER_PROMPT = """You are exceptionally skilled at crafting high-quality programming problems and \
offering precise solutions.

Please gain inspiration from the following random code snippet to create a high-quality programming \
problem. Present your output in three distinct sections: [Problem Description], [Solution] and [Tests].

Code snippet for inspiration:
```python
{snippet}
```

Guidelines for each section:
1. [Problem Description]: This should be **completely self-contained**, providing all the contextual \
information one needs to understand and solve the problem. Assume common programming knowledge but ensure \
that any specific context, variables, or code snippets pertinent to this problem are explicitly included.
2. [Solution]: Offer a comprehensive, **correct** Python solution that accurately addresses the [Problem \
Description] you provided. It may use the standard library, NumPy and scikit-learn.
3. [Tests]: Python assert statements that check the solution; they must pass when run after it.

[Problem Description]
"""
# Few-shot (examples_per_prompt > 0): the same three sections, shown on worked examples first, which a
# small teacher needs to produce the format at all
FEW_SHOT_HEAD = (
    "Each programming problem below is inspired by a code snippet from a real library. The problem is "
    "self-contained and comes with a correct Python solution in plain Python (lists and numbers, no "
    "NumPy) and tests: assert statements that call the solution on small inputs.\n\n"
)
EXAMPLES = Path(__file__).parent / "data" / "oss_examples.jsonl"


def format_example(snippet_code: str, example: dict | None = None) -> str:
    """One snippet and, for a worked example, its problem, solution and tests."""
    head = f"Code snippet for inspiration:\n```python\n{snippet_code.strip()}\n```\n[Problem Description]\n"
    if example is None:
        return head
    return (
        f"{head}{example['instruction']}\n[Solution]\n```python\n{example['output'].strip()}\n```\n"
        f"[Tests]\n```python\n{example['tests'].strip()}\n```\n"
    )


def oss_instruct_prompt(snippet_code: str, examples: list[dict] = ()) -> str:
    if not examples:
        return MAGICODER_PROMPT.format(snippet=snippet_code)
    shown = "\n".join(format_example(e["snippet"], e) for e in examples)
    return f"{FEW_SHOT_HEAD}{shown}\n{format_example(snippet_code)}"


def snippet(record: dict, rng: random.Random, min_lines: int, max_lines: int) -> dict | None:
    """A window of consecutive lines of a record's code (dedented), or None when it holds no code."""
    lines = record["code"].splitlines()
    size = min(rng.randint(min_lines, max_lines), len(lines))
    if size == 0:
        return None
    start = rng.randrange(len(lines) - size + 1)
    window = lines[start : start + size]
    if not any(line.strip() and not line.lstrip().startswith("#") for line in window):
        return None
    first = record.get("line_start", 1) + start
    return {
        "code": textwrap.dedent("\n".join(window)).strip("\n"),
        "record_id": record.get("id"),
        "qualname": record.get("name"),
        "path": record.get("path"),
        "lines": [first, first + size - 1],
    }


def sample_snippets(records: list[dict], n: int, cfg: OssInstructConfig, rng: random.Random) -> list[dict]:
    """n snippets from records drawn at random (a few tries each past blank or comment-only windows)."""
    usable = [r for r in records if r.get("code", "").strip()]
    if not usable:
        raise ValueError("synthesize.oss_instruct needs scraped code; the scrape stage's records have none")
    out: list[dict] = []
    for _ in range(n * 10):
        if len(out) == n:
            break
        found = snippet(rng.choice(usable), rng, cfg.min_lines, cfg.max_lines)
        if found is not None:
            out.append(found)
    return out


def oss_instruct(
    teacher: Teacher, records: list[dict], cfg: OssInstructConfig, verify: VerifyConfig, seed: int
) -> tuple[list[dict], Counter, Filtered]:
    """(kept problems, counts, everything filtered: kept and rejected rows with their reasons)."""
    rng = random.Random(seed)
    seeds = sample_snippets(records, cfg.num_prompts, cfg, rng)
    demos = list(iter_jsonl(EXAMPLES))
    k = min(cfg.examples_per_prompt, len(demos))
    replies = teacher.generate([oss_instruct_prompt(s["code"], rng.sample(demos, k)) for s in seeds])
    counts: Counter = Counter(prompts=len(seeds))
    result = Filtered()
    candidates = []
    # only the first task: one that follows is inspired by a snippet the teacher made up, not ours
    for seed_snippet, tasks in tasks_of_replies(seeds, replies, "oss_instruct", counts, result, max_tasks=1):
        if not tasks:
            continue
        task = tasks[0]
        candidates.append(
            pair(
                task.instruction,
                task.input,
                task.solution,
                "oss_instruct",
                mode="oss_instruct",
                tests=task.tests,
                seed_snippet=seed_snippet["code"],
                seed_record=seed_snippet["record_id"],
                qualname=seed_snippet["qualname"],
                path=seed_snippet["path"],
                lines=seed_snippet["lines"],
            )
        )
    # the worked examples start the pool: a small teacher copies one now and then (tests and all), which
    # would pass verification but is no new data
    pool = NoveltyIndex(cfg.max_similarity, [d["instruction"] for d in demos] if k else [])
    screen(candidates, cfg, verify, pool, into=result)
    counts["kept"] = len(result.kept)
    return result.kept, counts, result
