"""A seeded instruction set with planted problems, for the clean stage's test and its 100k benchmark.

Distinct rows: an instruction of random words and a small function built from random statements, names
and constants, so that two distinct rows share little beyond Python's keywords. Planted in it:
- near duplicates: a copy with single words or constants replaced until its word 5-gram Jaccard to the
  original falls in [0.75, 0.95];
- renamed copies: the original's code with every name it binds renamed and a new instruction;
- HumanEval leaks: a problem's prompt and solution as the output, or its docstring in the instruction;
- exact copies differing only in case and whitespace.
Each row's `metadata.planted` says what it is (and `of`: the original's id).
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Mapping

from tasks.clean.shingles import jaccard, ngram_hashes

SYLLABLES = ("ka", "lo", "mi", "tur", "sen", "vo", "dra", "pel", "qui", "zan", "bor", "ful", "nex", "gri")
STATEMENTS = (
    "{v} = {f}({a}, {c})",
    "for {i} in {b}:\n        {v} = {v} + {i} * {c}",
    "if {v} > {c}:\n        return {g}({v})",
    "{w} = [{i} - {c} for {i} in {b} if {i} != {c}]",
    "{v} = {g}({w}) if {w} else {c}",
    "while {v} < {c}:\n        {v} = {v} * {c} + 1",
    "{w} = {{{i}: {f}({i}) for {i} in {b}}}",
    "try:\n        {v} = {a}[{c}]\n    except IndexError:\n        {v} = {c}",
)


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _row(row_id: str, instruction: str, output: str, **planted) -> dict:
    # a copy comes from its original's source file, as real duplicates do: the split keeps them together
    path = f"planted/{planted.get('of', row_id)}.py"
    return {
        "id": row_id,
        "instruction": instruction,
        "input": "",
        "output": output,
        "source": "planted",
        "metadata": {"planted": planted.pop("kind", "distinct"), "path": path, **planted},
    }


def _function(rng: random.Random, vocab: list[str]) -> str:
    name = "_".join(rng.sample(vocab, 2))
    a, b, v, w, i, f, g = rng.sample(vocab, 7)
    body = [
        rng.choice(STATEMENTS).format(v=v, w=w, a=a, b=b, i=i, f=f, g=g, c=rng.randint(2, 999))
        for _ in range(rng.randint(3, 6))
    ]
    return (
        f"def {name}({a}, {b}):\n    {v} = {rng.randint(0, 99)}\n    "
        + "\n    ".join(body)
        + f"\n    return {v}\n"
    )


def _instruction(rng: random.Random, vocab: list[str], code: str) -> str:
    name = code.split("(", 1)[0].removeprefix("def ")
    return (
        f"Write a Python function `{name}` that " + " ".join(rng.choices(vocab, k=rng.randint(14, 28))) + "."
    )


def near_copy(
    rng: random.Random, row: dict, vocab: list[str], low: float = 0.75, high: float = 0.95
) -> dict | None:
    """Replace an instruction word and a code constant (so that neither the code's structure nor the
    prompt stays equal: only near-dup detection can find the copy) until the 5-gram Jaccard is in
    [low, high]."""
    original = ngram_hashes(f"{row['instruction']}\n\n{row['output']}", 5)
    for _ in range(50):
        words, code = row["instruction"].split(" "), row["output"]
        position = rng.randrange(6, len(words) - 1)
        words[position] = rng.choice([w for w in rng.sample(vocab, 2) if w != words[position]])
        numbers = list(re.finditer(r"\b\d+\b", code))
        number = rng.choice(numbers)
        code = code[: number.start()] + str(rng.randint(1000, 9999)) + code[number.end() :]
        instruction = " ".join(words)
        similarity = jaccard(original, ngram_hashes(f"{instruction}\n\n{code}", 5))
        if low <= similarity <= high:
            return {**row, "instruction": instruction, "output": code, "jaccard": similarity}
    return None


def renamed_copy(rng: random.Random, row: dict, vocab: list[str]) -> dict:
    tree = ast.parse(row["output"])
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    fresh = {name: f"{name}_{rng.choice(vocab)}" for name in bound}
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name"):
            if isinstance(getattr(node, attr, None), str) and getattr(node, attr) in fresh:
                setattr(node, attr, fresh[getattr(node, attr)])
    code = "# renamed\n" + ast.unparse(tree) + "\n"
    return {**row, "instruction": _instruction(rng, vocab, ast.unparse(tree)), "output": code}


def outcome(rows: list[dict], rejected: Mapping[str, str]) -> dict[str, Counter]:
    """Per planted kind, how many rows ended how: their rejection reason (by row id), else "kept"."""
    counts: dict[str, Counter] = {}
    for row in rows:
        counts.setdefault(row["metadata"]["planted"], Counter())[rejected.get(row["id"], "kept")] += 1
    return counts


def planted_set(distinct: int, near: int, renamed: int, leaks: int, exact: int, seed: int = 0) -> list[dict]:
    from tasks.common.benchmarks import humaneval_problems

    rng = random.Random(seed)
    vocab = _vocabulary(rng, 4000)
    rows = []
    for n in range(distinct):
        code = _function(rng, vocab)
        rows.append(_row(f"d{n}", _instruction(rng, vocab, code), code))
    pool = rng.sample(rows, len(rows))  # originals, each used once
    planted = []
    while len(planted) < near:  # a short row cannot lose a word and stay above 0.75: the next one can
        row = pool.pop()
        if copy := near_copy(rng, row, vocab):
            jaccard_ = round(copy["jaccard"], 3)
            planted.append(
                _row(
                    f"n{len(planted)}",
                    copy["instruction"],
                    copy["output"],
                    kind="near",
                    of=row["id"],
                    jaccard=jaccard_,
                )
            )
    originals = [None] * near + pool[: renamed + exact]
    for n, row in enumerate(originals[near : near + renamed]):
        copy = renamed_copy(rng, row, vocab)
        planted.append(_row(f"r{n}", copy["instruction"], copy["output"], kind="renamed", of=row["id"]))
    for n, row in enumerate(originals[near + renamed :]):
        instruction = "  " + row["instruction"].upper().replace(" ", "   ")
        planted.append(
            _row(f"e{n}", instruction, row["output"].replace("\n", " \n"), kind="exact", of=row["id"])
        )
    for n, problem in enumerate(rng.sample(humaneval_problems(), leaks)):
        function = next(
            node
            for node in ast.walk(ast.parse(problem["prompt"]))
            if isinstance(node, ast.FunctionDef) and node.name == problem["entry_point"]
        )
        docstring = ast.get_docstring(function)
        if n % 2 or not docstring:  # a few prompts keep their description in comments, not a docstring
            output = problem["prompt"] + problem["canonical_solution"]
            instruction = _instruction(rng, vocab, output.split("def ", 1)[1])
        else:
            instruction, output = f"Solve this: {docstring}", _function(rng, vocab)
        planted.append(_row(f"h{n}", instruction, output, kind="leak", of=problem["task_id"]))
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
