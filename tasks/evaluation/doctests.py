"""A scikit-learn doctest benchmark for pass@k, built from the scrape's function records.

The model sees a function's signature and docstring (a HumanEval-style prompt) and writes the body; the
function's own docstring examples check it, in the sandbox, against the installed scikit-learn. A problem
is kept only when it discriminates (`verify`): the real body passes and a body that raises fails, which
drops examples with random output, plots or downloads, and examples that never call the function.
"""

from __future__ import annotations

import ast
import doctest
import importlib.metadata
import random
from collections.abc import Callable, Iterable

from tasks.common.io import hash_json
from tasks.common.sandbox import Limits, run_many

# Measured over every function's examples: importing scikit-learn maps ~0.5 GB of address space, the
# examples peaked at 1.5 GB and 2 threads (the program pins BLAS/OpenMP to one; unpinned, OpenBLAS maps a
# buffer per core and 1 GB stops being enough on big machines), and took 3 s (median), 10 s at most.
SANDBOX = Limits(wall_s=30.0, cpu_s=30, memory_mb=3072, max_processes=16)
WRONG_BODY = "raise NotImplementedError\n"


def candidates(records: Iterable[dict], held_out: Callable[[dict], bool]) -> list[dict]:
    """Problems from held-out module-level functions whose docstring shows an example with its output."""
    problems = []
    for record in records:
        if record["kind"] != "function" or not held_out(record):
            continue
        examples = doctest.DocTestParser().get_examples(record["docstring"])
        prompt = _prompt(record["code"])
        if prompt is None or not any(example.want for example in examples):
            continue
        module, _, entry_point = record["name"].rpartition(".")
        problems.append(
            {
                "task_id": f"sklearn-doctest/{record['name']}",
                "module": module,
                "entry_point": entry_point,
                "prompt": prompt,
                "canonical": record["code"],
                "docstring": record["docstring"],
                "record_id": record["id"],
                "package_version": record["package_version"],
            }
        )
    return sorted(problems, key=lambda p: p["task_id"])


def _prompt(code: str) -> str | None:
    """`code` up to the end of its docstring (decorators and signature included), or None when there is
    no body after a docstring of its own lines for a completion to replace."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
        return None
    if ast.get_docstring(node, clean=False) is None:
        return None
    doc, lines = node.body[0], code.split("\n")
    before = lines[doc.lineno - 1].encode()[: doc.col_offset]
    after = lines[doc.end_lineno - 1].encode()[doc.end_col_offset :]
    if before.strip() or after.strip():
        return None  # `def f(): "doc"` or `"doc"; x = 1`: no line boundary between prompt and body
    return "\n".join(lines[: doc.end_lineno]) + "\n"


def _body_indent(prompt: str) -> str:
    doc = ast.parse(prompt).body[0].body[0]
    return prompt.split("\n")[doc.lineno - 1][: doc.col_offset]


# Part of every program; plain text, not part of the f-string below, since it holds regex backslashes.
CHECKER = r'''
NUMBER = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?", re.I)
NUMPY_SCALAR = re.compile(r"np\.(?:float|int|uint|bool_)\d*\(([^()]*)\)")


class RoundedOutputChecker(doctest.OutputChecker):
    """scikit-learn checks its examples with scipy-doctest: a printed number is the result rounded to the
    digits shown ("0.57" for 0.5714...) and a numpy 2 scalar repr reads as its value. The same here; the
    words and layout must still match."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        want, got = NUMPY_SCALAR.sub(r"\1", want), NUMPY_SCALAR.sub(r"\1", got)
        if NUMBER.sub("#", " ".join(want.split())) != NUMBER.sub("#", " ".join(got.split())):
            return False
        for shown, value in zip(NUMBER.findall(want), NUMBER.findall(got)):
            last_digit = decimal.Decimal(shown).as_tuple().exponent  # -2 for 0.57, -6 for 1.5e-05
            if abs(float(shown) - float(value)) > 0.5 * 10.0**last_digit * (1 + 1e-9):
                return False
        return True
'''


def program(problem: dict, completion: str) -> str:
    """The script the sandbox runs: define prompt + completion inside the function's own module (so its
    helpers resolve), put it wherever the original is imported, and run the docstring's examples."""
    return f"""import os
for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = "1"
os.environ["MPLBACKEND"] = "agg"
import __future__, decimal, doctest, importlib, re, sys

{CHECKER}

def main():  # locals: a global `original` would itself be replaced, in __main__, midway through the sweep
    module = importlib.import_module({problem["module"]!r})
    original = getattr(module, {problem["entry_point"]!r})
    # the module's own `from __future__` imports (annotations, mostly) apply to the candidate too
    flags = 0
    for feature in __future__.all_feature_names:
        if vars(module).get(feature) is getattr(__future__, feature):
            flags |= getattr(__future__, feature).compiler_flag
    source = {problem["prompt"]!r} + {completion!r}
    exec(compile(source, "<candidate>", "exec", flags, dont_inherit=True), vars(module))
    candidate = vars(module)[{problem["entry_point"]!r}]
    for imported in list(sys.modules.values()):
        for key, value in list(getattr(imported, "__dict__", {{}}).items()):
            if value is original:
                setattr(imported, key, candidate)
    docstring = {problem["docstring"]!r}
    test = doctest.DocTestParser().get_doctest(docstring, {{}}, {problem["task_id"]!r}, None, 0)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.DocTestRunner(checker=RoundedOutputChecker(), optionflags=flags).run(test)
    return 0 if result.attempted and not result.failed else 1


sys.exit(main())
"""


def verify(problems: list[dict], workers: int = 2) -> tuple[list[dict], dict]:
    """(the problems that discriminate, counts by reason): the real body passes, one that raises fails."""
    codes = []
    for problem in problems:
        canonical, prompt = problem["canonical"], problem["prompt"]
        codes += [
            program(problem, canonical[len(prompt) :]),
            program(problem, _body_indent(prompt) + WRONG_BODY),
        ]
    results = run_many(codes, SANDBOX, workers=workers)
    kept, counts = (
        [],
        {"candidates": len(problems), "kept": 0, "canonical_failed": 0, "not_discriminating": 0},
    )
    for problem, canonical, wrong in zip(problems, results[::2], results[1::2], strict=True):
        if not canonical.passed:
            counts["canonical_failed"] += 1
        elif wrong.passed:
            counts["not_discriminating"] += 1
        else:
            kept.append(problem)
    counts["kept"] = len(kept)
    return kept, counts


def select_verified(
    problems: list[dict], limit: int | None, seed: int, workers: int = 2
) -> tuple[list, dict]:
    """A seeded random `limit` of the problems that pass `verify` (all of them when None), verifying in
    that seeded order only as many as it takes: each check imports scikit-learn twice (~3 s)."""
    pending = random.Random(seed).sample(problems, len(problems))
    kept: list[dict] = []
    counts = dict.fromkeys(("candidates", "kept", "canonical_failed", "not_discriminating"), 0)
    while pending and (limit is None or len(kept) < limit):
        chunk_size = len(pending) if limit is None else max(limit - len(kept), workers)
        chunk, pending = pending[:chunk_size], pending[chunk_size:]
        good, chunk_counts = verify(chunk, workers)
        kept += good
        counts = {k: counts[k] + chunk_counts[k] for k in counts}
    kept = kept[:limit] if limit is not None else kept
    counts["kept"], counts["unchecked"] = len(kept), len(pending)
    return sorted(kept, key=lambda p: p["task_id"]), counts


def benchmark_key(problems: list[dict]) -> str:
    """Pinned to the installed scikit-learn version, with its own key: the same prompts checked against
    another version's behaviour are another benchmark."""
    content = [{k: p[k] for k in ("task_id", "prompt", "docstring")} for p in problems]
    return hash_json({"scikit-learn": importlib.metadata.version("scikit-learn"), "problems": content})
