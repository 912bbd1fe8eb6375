"""Stage 2, synthesize: instruction/response pairs from the scraped source.

Two generators, each writing the same record schema to `pairs.jsonl`
(`id, instruction, input, output, source, metadata`):
- docstring pairs (no teacher): the docstring's summary is the instruction, the signature the input, the
  code without its docstring the response (the scikit-learn recipe in seeds/003);
- Self-Instruct (seeds/001): a teacher is shown a few tasks sampled from a growing pool (seeded with the
  20 code tasks in tasks/data) and asked for a new one; a new task is kept when it parses into
  instruction/input/output and its instruction's ROUGE-L against every pooled instruction stays under
  `self_instruct.max_similarity`.

Run alone: `finetune run --config pipeline_config/offline.yaml --only synthesize`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline_config import PipelineConfig
from pipeline_config.schema import SelfInstructConfig, SynthesizeConfig
from tasks.base_model import resolve_base_model
from tasks.stage import StageOutput, StageSpec, file_version, iter_jsonl, stage_task, write_jsonl
from tasks.teacher import Teacher, make_teacher

SEED_TASKS = Path(__file__).parent / "data" / "code_seed_tasks.jsonl"
SUMMARY_MAX_CHARS = 600


def pair(instruction: str, input_text: str, output: str, source: str, **metadata) -> dict:
    digest = hashlib.sha1(f"{instruction}\x00{input_text}\x00{output}".encode()).hexdigest()[:16]
    return {
        "id": f"{source}-{digest}",
        "instruction": instruction,
        "input": input_text,
        "output": output,
        "source": source,
        "metadata": metadata,
    }


def docstring_summary(docstring: str) -> str:
    """The docstring's first paragraph: numpydoc sections (Parameters, Returns...) follow a blank line."""
    first = docstring.strip().split("\n\n", 1)[0]
    return " ".join(first.split())[:SUMMARY_MAX_CHARS]


def docstring_pairs(records: list[dict], limit: int | None) -> Iterator[dict]:
    n = 0
    for rec in records:
        summary = docstring_summary(rec["docstring"])
        if not summary:
            continue
        kind = "class" if rec["kind"] == "class" else "function"
        instruction = f"Write a Python {kind} `{rec['name'].rsplit('.', 1)[-1]}`: {summary}"
        yield pair(
            instruction,
            rec["signature"],
            rec["code_without_docstring"],
            "docstring",
            qualname=rec["name"],
            path=rec["path"],
            lines=[rec["line_start"], rec["line_end"]],
            package_version=rec["package_version"],
        )
        n += 1
        if limit and n >= limit:
            return


# --- Self-Instruct --------------------------------------------------------------------------------------

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
    fenced = re.search(r"```(?:python)?\n(.*?)```", output, re.DOTALL)
    return {
        "instruction": match["instruction"].strip(),
        "input": match["input"].strip(),
        "output": (fenced[1] if fenced else output).strip(),
    }


def self_instruct(teacher: Teacher, cfg: SelfInstructConfig, seed: int) -> tuple[list[dict], Counter]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    seed_path = Path(cfg.seed_tasks) if cfg.seed_tasks else SEED_TASKS
    pool = list(iter_jsonl(seed_path))
    if not pool:
        raise ValueError(f"synthesize.self_instruct.seed_tasks: {seed_path} holds no tasks")
    rng = random.Random(seed)
    kept: list[dict] = []
    counts: Counter = Counter()
    for round_no in range(cfg.num_rounds):
        prompts = [
            self_instruct_prompt(rng.sample(pool, min(cfg.examples_per_prompt, len(pool))))
            for _ in range(cfg.prompts_per_round)
        ]
        for completion in teacher.generate(prompts):
            counts["generated"] += 1
            task = parse_task(completion)
            if task is None:
                counts["unparseable"] += 1
                continue
            similarity = max(
                scorer.score(t["instruction"], task["instruction"])["rougeL"].fmeasure for t in pool
            )
            if similarity >= cfg.max_similarity:
                counts["too_similar"] += 1
                continue
            pool.append(task)
            kept.append(
                pair(
                    task["instruction"],
                    task["input"],
                    task["output"],
                    "self_instruct",
                    round=round_no,
                    max_similarity=round(similarity, 4),
                )
            )
            counts["kept"] += 1
    return kept, counts


def synthesize_pairs(
    scrape_dir: Path, out_dir: Path, cfg: SynthesizeConfig, teacher: Teacher | None, seed: int
) -> dict:
    records = list(iter_jsonl(Path(scrape_dir) / "records.jsonl"))
    rows = list(docstring_pairs(records, cfg.max_docstring_pairs)) if cfg.docstring_pairs else []
    counts: Counter = Counter()
    if cfg.self_instruct.enabled:
        generated, counts = self_instruct(teacher, cfg.self_instruct, seed)
        rows += generated
    written = write_jsonl(out_dir / "pairs.jsonl", rows)
    return {
        "rows_in": len(records),
        "rows_out": written,
        "by_source": dict(Counter(r["source"] for r in rows)),
        "self_instruct": {k: counts.get(k, 0) for k in ("generated", "unparseable", "too_similar", "kept")},
        "teacher": cfg.teacher.backend if cfg.self_instruct.enabled else None,
    }


def run(cfg: PipelineConfig, inputs: Mapping[str, StageOutput], out_dir: Path, context: Mapping) -> dict:
    scrape = inputs["scrape"]
    teacher = None
    if cfg.synthesize.self_instruct.enabled:
        base = None
        if cfg.synthesize.teacher.backend == "local" and cfg.synthesize.teacher.model == "base":
            base = resolve_base_model(
                cfg.model, cfg.workspace_path(), Path(scrape.path), scrape.key, cfg.seed
            )
        teacher = make_teacher(cfg.synthesize.teacher, base, cfg.seed)
    return synthesize_pairs(Path(scrape.path), out_dir, cfg.synthesize, teacher, cfg.seed)


SPEC = StageSpec("synthesize", run, ("synthesize", "model", "seed"), file_version(__file__, SEED_TASKS))
# retries: a remote teacher may drop a connection; the stage restarts from a clean temporary folder
TASK = stage_task(SPEC, retries=2)
