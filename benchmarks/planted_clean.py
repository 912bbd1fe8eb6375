"""A seeded instruction set with planted problems, for the clean stage's tests and benchmarks.

Distinct rows are Python coding tasks composed the way real instruction data is
(benchmarks/planted_tasks.py): shared openers and closing sentences, docstrings that repeat the
instruction, the same few idioms and names, so distinct rows share phrases and 13-grams; one in 20 has
the code of another distinct row (up to names) under the instruction of another task, as when the same
few lines answer different requests. Each is a different task (`Task.key`), and each is below word
5-gram Jaccard 0.5 to every other row, checked with the clean stage's own MinHash index as it is built
(up to 20,000 distinct rows; a larger set is distinct by task only), and `similarity` measures what
they share. Planted in it:
- near duplicates: a word of the instruction and a constant of the code replaced until the 5-gram Jaccard
  to the original is in [0.75, 0.95];
- renamed copies: the same task with the function, its parameter and its loop variable renamed, in the
  code and in the instruction;
- exact copies differing only in case and whitespace;
- HumanEval leaks: a problem's prompt and solution as the output, or its docstring in the instruction;
- held-out leaks (with `held_out_leaks`): a training row carrying a held-out row's answer (its function
  under another name, with more code around it; answers of at least 26 words, two 13-grams' worth: a
  one-line comprehension is an idiom, not an answer that identifies its task) or its whole instruction.
Each row's `metadata.planted` says what it is (and `of`: the original's id).
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Mapping

import numpy as np

from benchmarks.planted_tasks import Names, random_names, random_task, render
from tasks.clean.shingles import WORD, jaccard, ngram_hashes

DISTINCT_BELOW = 0.5  # word 5-gram Jaccard under which a row is distinct from every other
WORDS = ("value", "entry", "list", "input", "given", "element", "result", "number", "string", "order")
WORDS += ("collection", "sequence", "record", "field", "item", "each", "provided", "array", "output")


def _row(row_id: str, instruction: str, output: str, input_: str = "", path: str | None = None, **planted):
    # a copy comes from its original's source file, as real duplicates do: the split keeps them together
    path = path or f"planted/{planted.get('of', row_id)}.py"
    return {
        "id": row_id,
        "instruction": instruction,
        "input": input_,
        "output": output,
        "source": "planted",
        "metadata": {"planted": planted.pop("kind", "distinct"), "path": path, **planted},
    }


class _Distinct:
    """Accepts a row only when it is under DISTINCT_BELOW to every row accepted before (the clean stage's
    MinHash LSH, with exact Jaccard on its candidates)."""

    def __init__(self):
        from pipeline_config.schema import CleanConfig
        from tasks.clean.dedup import SIGNATURE, NearDedup, signature

        self.cfg = CleanConfig(structural_dedup=False, near_dedup={"threshold": DISTINCT_BELOW})
        self.near, self.signature, self.key = NearDedup(self.cfg.near_dedup), signature, SIGNATURE

    def accept(self, row: dict) -> bool:
        return self.near.check({**row, self.key: self.signature(row, self.cfg)})[0]


CHECKED_UP_TO = 20_000  # distinct rows checked by MinHash; beyond, by task only (the check is quadratic here)


def _distinct_rows(rng: random.Random, count: int) -> tuple[list[dict], dict[str, tuple]]:
    rows, made, seen, distinct = [], {}, set(), _Distinct()
    accept = distinct.accept if count <= CHECKED_UP_TO else lambda row: True
    while len(rows) < count:
        n = len(rows)
        if n >= 20 and rng.random() < 0.05:  # another row's code (renamed) under another task's instruction
            of = rows[rng.randrange(n)]["id"]
            task, names, style = made[of]
            other = random_task(rng)
            new = random_names(rng, other)
            fresh = Names(f"{new.function}_{rng.choice(WORDS)}", new.parameter, new.element)
            if other.key in seen or fresh.parameter == names.parameter or fresh.element == names.element:
                continue
            instruction, input_, _ = render(rng, other, fresh, style, framing=True)
            _, _, code = render(rng, task, fresh, style)
            task = other
            row = _row(f"d{n}", instruction, code, input_, same_code_as=of)
        else:
            task = random_task(rng)
            if task.key in seen:
                continue
            names, style = random_names(rng, task), rng.randrange(3)
            instruction, input_, code = render(rng, task, names, style)
            row = _row(f"d{n}", instruction, code, input_)
        if accept(row):
            seen.add(task.key)
            made[row["id"]] = (task, names, style)
            rows.append(row)
    return rows, made


def _constants(code: str) -> list[re.Match]:
    """The numbers and string literals of the code, outside its docstring (which structure ignores)."""
    docstring = re.search(r'"""[^"]*"""', code)
    found = re.finditer(r"\b\d+\b|'[a-z]+'", code)
    return [m for m in found if not docstring or not docstring.start() <= m.start() < docstring.end()]


def near_copy(rng: random.Random, row: dict, low: float = 0.75, high: float = 0.95) -> dict | None:
    """Replace an instruction word and a code constant (so that neither the code's structure nor the
    prompt stays equal: only near-dup detection can find the copy) until the 5-gram Jaccard is in
    [low, high]."""
    original = ngram_hashes(f"{row['instruction']}\n{row['input']}\n{row['output']}", 5)
    words, code = row["instruction"].split(" "), row["output"]
    if not _constants(code):
        return None  # code without a constant would stay structurally equal: another original is taken
    for _ in range(50):
        position = rng.randrange(3, len(words))
        words[position] = rng.choice([w for w in rng.sample(WORDS, 2) if w != words[position]])
        c = rng.choice(_constants(code))
        new = str(rng.randint(3000, 9999)) if c[0][0] != "'" else repr(rng.choice(WORDS))
        code = code[: c.start()] + new + code[c.end() :]
        instruction = " ".join(words)
        similarity = jaccard(original, ngram_hashes(f"{instruction}\n{row['input']}\n{code}", 5))
        if low <= similarity <= high:
            return {**row, "instruction": instruction, "output": code, "jaccard": similarity}
        if similarity < low:
            return None
    return None


def renamed_copy(rng: random.Random, row: dict) -> dict:
    """The same task under other names: every name the code binds renamed, in the code and wherever the
    instruction and input name it (between backticks)."""
    tree = ast.parse(row["output"])
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    fresh = {name: f"{name}_{rng.choice(WORDS)}" for name in sorted(bound)}  # sorted: the same draws
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name"):
            if isinstance(getattr(node, attr, None), str) and getattr(node, attr) in fresh:
                setattr(node, attr, fresh[getattr(node, attr)])
    names = re.compile(r"\b(" + "|".join(map(re.escape, sorted(bound))) + r")\b")

    def rename(text: str) -> str:
        return re.sub(r"`[^`]*`", lambda m: names.sub(lambda n: fresh[n[0]], m[0]), text)

    code = "# renamed\n" + ast.unparse(tree) + "\n"
    return {**row, "instruction": rename(row["instruction"]), "input": rename(row["input"]), "output": code}


def outcome(rows: list[dict], rejected: Mapping[str, str]) -> dict[str, Counter]:
    """Per planted kind, how many rows ended how: their rejection reason (by row id), else "kept"."""
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(row["metadata"]["planted"], Counter())[rejected.get(row["id"], "kept")] += 1
    return counts


def _humaneval_leak(rng: random.Random, n: int, problem: dict) -> dict:
    function = next(
        node
        for node in ast.walk(ast.parse(problem["prompt"]))
        if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]
    )
    docstring = ast.get_docstring(function)
    if n % 2 or not docstring:  # a few prompts keep their description in comments, not a docstring
        instruction = f"Write a Python function `{problem['entry_point']}` that passes the examples below."
        output = problem["prompt"] + problem["canonical_solution"]
    else:
        task = random_task(rng)
        _, _, output = render(rng, task, random_names(rng, task))
        instruction = f"Solve this: {docstring}"
    return _row(f"h{n}", instruction, output, kind="leak", of=problem["task_id"])


def _held_out_leaks(rng: random.Random, rows: list[dict], count: int, split, seed: int) -> list[dict]:
    from tasks.common.splits import group_of, is_held_out

    held = [r for r in rows if is_held_out(group_of(r), split, seed)]
    answers = [r for r in held if len(WORD.findall(r["output"])) >= 26]
    leaks = []
    for n in range(count):
        original = rng.choice(answers if n % 2 else held)
        path = next(p for k in range(1000) if not is_held_out(p := f"planted/hl{n}-{k}.py", split, seed))
        task = random_task(rng)
        instruction, input_, code = render(rng, task, random_names(rng, task))
        if n % 2:  # its answer under another name, with a caller around it
            name = original["output"].split("(", 1)[0].removeprefix("def ")
            code = original["output"].replace(name, f"{name}_v2") + f"\n\nprint({name}_v2([3, 1, 2]))\n"
        else:  # its whole instruction, asked again with more
            instruction = original["instruction"] + " Then explain the solution in one sentence."
        leaks.append(_row(f"l{n}", instruction, code, input_, path, kind="held_out_leak", of=original["id"]))
    return leaks


def planted_set(
    distinct: int,
    near: int,
    renamed: int,
    leaks: int,
    exact: int,
    seed: int = 0,
    held_out_leaks: int = 0,
    split=None,
    split_seed: int = 0,
) -> list[dict]:
    """`held_out_leaks`: rows that leak a row `split` (default SplitConfig()) and `split_seed` hold out."""
    from pipeline_config.schema import SplitConfig
    from tasks.common.benchmarks import humaneval_problems

    rng = random.Random(seed)
    rows, _ = _distinct_rows(rng, distinct)
    pool = rng.sample(rows, len(rows))  # originals, each used once
    planted = []
    while len(planted) < near:  # a short row cannot lose a word and stay above 0.75: the next one can
        row = pool.pop()
        if copy := near_copy(rng, row):
            j = round(copy["jaccard"], 3)
            kind = {"kind": "near", "of": row["id"], "jaccard": j}
            planted.append(
                _row(f"n{len(planted)}", copy["instruction"], copy["output"], row["input"], **kind)
            )
    for n, row in enumerate(pool[:renamed]):
        copy = renamed_copy(rng, row)
        kind = {"kind": "renamed", "of": row["id"]}
        planted.append(_row(f"r{n}", copy["instruction"], copy["output"], copy["input"], **kind))
    for n, row in enumerate(pool[renamed : renamed + exact]):
        instruction = "  " + row["instruction"].upper().replace(" ", "   ")
        output = row["output"].replace("\n", " \n")
        planted.append(_row(f"e{n}", instruction, output, row["input"], kind="exact", of=row["id"]))
    for n, problem in enumerate(rng.sample(humaneval_problems(), leaks)):
        planted.append(_humaneval_leak(rng, n, problem))
    planted += _held_out_leaks(rng, rows, held_out_leaks, split or SplitConfig(), split_seed)
    # planted rows come after their originals, at random places: dedup keeps the first of a group
    for row in planted:
        rows.insert(rng.randint(len(rows) // 2, len(rows)), row)
    first = {r["id"]: i for i, r in enumerate(rows)}
    for row in planted:
        if row["metadata"].get("of") in first and first[row["metadata"]["of"]] > first[row["id"]]:
            i, j = first[row["id"]], first[row["metadata"]["of"]]
            rows[i], rows[j] = rows[j], rows[i]
            first[rows[i]["id"]], first[rows[j]["id"]] = i, j
    return rows


def similarity(rows: list[dict], sample: int = 200, seed: int = 0) -> dict:
    """What the distinct rows share: the nearest other distinct row's word 5-gram Jaccard (exact, for a
    sample of them), the share that has a word 13-gram in common with another distinct row (what one-n-gram
    decontamination matches), and the share whose code equals another's up to names."""
    from tasks.clean.decontaminate import row_text
    from tasks.clean.filters import output_trees
    from tasks.clean.structure import structural_key

    distinct = [r for r in rows if r["metadata"]["planted"] == "distinct"]
    shingles = [ngram_hashes(row_text(r), 5) for r in distinct]
    chosen = random.Random(seed).sample(range(len(distinct)), min(sample, len(distinct)))
    nearest = [max(jaccard(shingles[i], s) for j, s in enumerate(shingles) if j != i) for i in chosen]
    grams = [ngram_hashes(row_text(r), 13) for r in distinct]
    values, counts = np.unique(np.concatenate(grams), return_counts=True)
    common = values[counts > 1]
    sharing = sum(bool(np.isin(g, common).any()) for g in grams)
    keys = Counter(structural_key(output_trees(r["output"])[0]) for r in distinct)
    return {
        "distinct_rows": len(distinct),
        "nearest_jaccard_median": round(float(np.median(nearest)), 3),
        "nearest_jaccard_p90": round(float(np.quantile(nearest, 0.9)), 3),
        "nearest_jaccard_max": round(max(nearest), 3),
        "share_with_a_common_13gram": round(sharing / len(distinct), 3),
        "share_with_the_code_of_another": round(sum(c for c in keys.values() if c > 1) / len(distinct), 3),
    }
