"""A codebase completion benchmark on held-out scraped code: next-line and fill-in-the-middle.

What it measures: how well a model continues or fills the code of the corpus it was tuned on, as an editor's
completion would use it, scored by exact match and edit similarity (`score`), beside a baseline that
repeats the line above (`previous_line`). Cases come only from records the caller's `held_out` predicate
keeps, so no case was trained on.

- next_line (RepoBench's in-file next-line task, inside one function): the prompt is the function's code
  up to the end of some line's text (its last MAX_PREFIX_CHARS, from a line start) and the target is the
  next non-empty line. The prefix never ends in
  "\\n": SmolLM2's tokenizer (like most BPE code tokenizers) merges a newline with the next line's
  indentation into one token, so a prompt ending in "\\n" leaves the model mid-token; ending at the line's
  text lets its first token be the newline+indent token it was trained on. Generation stops a row at the
  first newline after some code (`ends_first_line`). Targets are statement start lines of the body
  (`ast`), never docstring, prose or comment-only lines, and not trivial lines (`else:`, `pass`, `)`).
- fim: the middle is the exact source of one short statement or expression (one line, at most 80
  characters, `tasks.tokenization.fim.ast_spans`), prefix and suffix the rest of the code; the prompt is
  the PSM or SPM sentinel layout the tokenize stage trains with. Only for tokenizers that have the FIM
  tokens (`supports_fim`: a profile with tokenize.fim_rate > 0 adds them).

Cases are drawn from function and method records (a class record's code repeats its methods'), at most
two per record with a generator seeded by (seed, record id), then a seeded `limit` of them across all
records; sorted by task_id. The same records and seed give the same cases; `benchmark_key` addresses them.

Use: `cases = next_line_cases(records, held_out, 32, seed)`, `done = complete(model, tokenizer, cases, 16,
24)`, `[score(c, d.text) for c, d in zip(cases, done)]` and `score(c, previous_line(c))` for the baseline.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Iterable

from tasks.common.generation import Completion, generate
from tasks.common.io import hash_json
from tasks.tokenization.fim import FIM_TOKENS, ast_spans, psm, spm

METRICS = ("exact_match", "edit_similarity")
KINDS = ("function", "method")
PER_RECORD = 2
FIM_MAX_CHARS = 80
# Context kept around a target, cut at line boundaries: the nearest code says most about the next line, and
# prefill of a 2,000-token function costs more than the whole generation on a CPU (32 cases took 144 s
# uncut, prefixes up to 2,016 tokens)
MAX_PREFIX_CHARS, MAX_SUFFIX_CHARS = 1000, 400
MIN_CHARS = 4  # non-space characters of a target or middle
TRIVIAL = frozenset({"pass", "else:", "try:", "finally:", "break", "continue", "return", "raise", "..."})
FIM_STOPS = ("<|endoftext|>", "<file_sep>")  # besides eos: ends of a file in StarCoder-style corpora
FILL = "<FILL>"  # `finetune generate --infill "prefix<FILL>suffix"`


# --- cases --------------------------------------------------------------------------------------------------


def next_line_cases(
    records: Iterable[dict], held_out: Callable[[dict], bool], limit: int, seed: int
) -> list[dict]:
    """Up to `limit` next-line cases from held-out function and method records."""
    cases = []
    for record in _eligible(records, held_out):
        lines = record["code"].split("\n")
        targets = _target_lines(record["code"], lines)
        for t in sorted(_rng(seed, record).sample(targets, min(PER_RECORD, len(targets)))):
            cases.append(
                {
                    "task_id": f"next_line/{record['name']}/{t + 1}",
                    "kind": "next_line",
                    "prefix": _crop_left("\n".join(lines[:t]).rstrip(), MAX_PREFIX_CHARS),
                    "suffix": "",
                    "target": lines[t].strip(),
                    "record_id": record["id"],
                }
            )
    return _capped(cases, limit, seed)


def fim_cases(
    records: Iterable[dict], held_out: Callable[[dict], bool], limit: int, seed: int, order: str = "psm"
) -> list[dict]:
    """Up to `limit` fill-in-the-middle cases (one `order`, "psm" or "spm") from held-out records."""
    if order not in ("psm", "spm"):
        raise ValueError(f"fim order must be 'psm' or 'spm' (got {order!r})")
    cases = []
    for record in _eligible(records, held_out):
        code = record["code"]
        rng, chosen = _rng(seed, record), []
        spans = _fim_spans(code)
        while spans and len(chosen) < PER_RECORD:
            a, b = rng.choice(spans)
            chosen.append((a, b))
            spans = [(c, d) for c, d in spans if d <= a or c >= b]  # disjoint: no middle inside another
        for a, b in sorted(chosen):
            line = code.count("\n", 0, a) + 1
            col = a - (code.rfind("\n", 0, a) + 1)
            cases.append(
                {
                    "task_id": f"fim/{order}/{record['name']}/{line}:{col}",
                    "kind": "fim",
                    "order": order,
                    "prefix": _crop_left(code[:a], MAX_PREFIX_CHARS),
                    "suffix": _crop_right(code[b:], MAX_SUFFIX_CHARS),
                    "target": code[a:b],
                    "record_id": record["id"],
                }
            )
    return _capped(cases, limit, seed)


def _crop_left(text: str, limit: int) -> str:
    """The end of `text` within `limit` characters, starting at a line start (all of it when it fits)."""
    if len(text) <= limit:
        return text
    cut = text.find("\n", len(text) - limit)
    return text[cut + 1 :] if cut >= 0 else text[-limit:]


def _crop_right(text: str, limit: int) -> str:
    """The start of `text` within `limit` characters, ending at a line end (all of it when it fits)."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[:cut] if cut > 0 else text[:limit]


def _eligible(records: Iterable[dict], held_out: Callable[[dict], bool]) -> list[dict]:
    return sorted(
        (r for r in records if r["kind"] in KINDS and held_out(r)), key=lambda r: (r["name"], r["id"])
    )


def _rng(seed: int, record: dict) -> random.Random:
    # per record: a record keeps its cases when others are added to or removed from the corpus
    return random.Random(f"{seed}/{record['id']}")


def _capped(cases: list[dict], limit: int, seed: int) -> list[dict]:
    cases = sorted({c["task_id"]: c for c in reversed(cases)}.values(), key=lambda c: c["task_id"])
    if len(cases) > limit:
        cases = random.Random(seed).sample(cases, limit)
    return sorted(cases, key=lambda c: c["task_id"])


def _trivial(text: str) -> bool:
    return len("".join(text.split())) < MIN_CHARS or text.strip() in TRIVIAL


def _docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string statements that are docstrings (or prose) rather than code."""
    return {
        id(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _parse(code: str) -> ast.Module | None:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    ok = len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef)
    return tree if ok else None


def _target_lines(code: str, lines: list[str]) -> list[int]:
    """0-based indices of the lines a statement of the body starts (at the line's indentation), after the
    first line of text, that are not trivial."""
    tree = _parse(code)
    if tree is None:
        return []
    top, prose = tree.body[0], _docstring_nodes(tree)
    found = set()
    for node in ast.walk(top):
        if node is top or not isinstance(node, ast.stmt) or id(node) in prose:
            continue
        t = node.lineno - 1
        line = lines[t]
        if node.col_offset != len(line) - len(line.lstrip()):  # indentation is ASCII: bytes = characters
            continue  # `x = 1; y = 2`, `if a: b`: the statement does not begin the line
        if not _trivial(line) and any(s.strip() for s in lines[:t]):
            found.add(t)
    return sorted(found)


def _fim_spans(code: str) -> list[tuple[int, int]]:
    """Short one-line statement and expression spans that are code, not a docstring."""
    tree = _parse(code)
    if tree is None:
        return []
    docstrings = _docstring_nodes(tree)
    prose = [(n.lineno, n.end_lineno) for n in ast.walk(tree) if id(n) in docstrings]
    spans = ast_spans(code)
    out = set()
    for a, b in [*spans.get("statement", []), *spans.get("expression", [])]:
        middle, line = code[a:b], code.count("\n", 0, a) + 1
        if "\n" in middle or len(middle) > FIM_MAX_CHARS or _trivial(middle):
            continue
        if any(first <= line <= last for first, last in prose):
            continue
        out.add((a, b))
    return sorted(out)


# --- prompts and generation ---------------------------------------------------------------------------------


def prompt(case: dict) -> str:
    if case["kind"] == "next_line":
        return case["prefix"]
    layout = psm if case["order"] == "psm" else spm
    return layout(case["prefix"], "", case["suffix"])


def supports_fim(tokenizer) -> bool:
    vocab = tokenizer.get_vocab()
    return all(token in vocab for token in FIM_TOKENS)


def infill_case(text: str) -> dict:
    """A PSM fim case from "prefix<FILL>suffix" (`finetune generate --infill`); ValueError unless the text
    holds exactly one marker."""
    if text.count(FILL) != 1:
        raise ValueError(f"--infill needs exactly one {FILL} marker (found {text.count(FILL)})")
    prefix, suffix = text.split(FILL)
    return {
        "task_id": "fim/psm/infill",
        "kind": "fim",
        "order": "psm",
        "prefix": prefix,
        "suffix": suffix,
        "target": "",
        "record_id": "",
    }


def ends_first_line(text: str) -> bool:
    """A newline after some code: the first "\\n" comes before it, since the prefix ends at a line's text."""
    return "\n" in text.lstrip()


def complete(model, tokenizer, cases: list[dict], batch_size: int, max_new_tokens: int) -> list[Completion]:
    """Greedy completions in the cases' order: next-line rows stop after their first line, fim rows at eos
    (or the end of a file)."""
    if any(c["kind"] == "fim" for c in cases) and not supports_fim(tokenizer):
        raise ValueError("fim cases need a tokenizer with the FIM tokens (train with tokenize.fim_rate > 0)")
    done: dict[int, Completion] = {}
    for kind, options in (("next_line", {"stop_when": ends_first_line}), ("fim", {"stop": FIM_STOPS})):
        indices = [i for i, c in enumerate(cases) if c["kind"] == kind]
        if indices:
            prompts = [prompt(cases[i]) for i in indices]
            out = generate(model, tokenizer, prompts, max_new_tokens, batch_size, **options)
            done.update(zip(indices, out, strict=True))
    return [done[i] for i in range(len(cases))]


# --- scores -------------------------------------------------------------------------------------------------


def first_line(text: str) -> str:
    return next((line for line in text.split("\n") if line.strip()), "")


def score(case: dict, completion_text: str) -> dict[str, float]:
    """Exact match after whitespace normalisation and edit similarity (rapidfuzz's ratio, 0..1)."""
    from rapidfuzz import fuzz

    got = first_line(completion_text) if case["kind"] == "next_line" else completion_text
    got, want = got.strip(), case["target"].strip()
    return {
        "exact_match": float(" ".join(got.split()) == " ".join(want.split())),
        "edit_similarity": 1.0 if not got and not want else fuzz.ratio(got, want) / 100,
    }


def previous_line(case: dict) -> str:
    """The baseline: the prefix's last non-empty line, repeated."""
    return first_line("\n".join(reversed(case["prefix"].split("\n"))))


def benchmark_key(cases: list[dict]) -> str:
    return hash_json({"completion_cases": cases})
