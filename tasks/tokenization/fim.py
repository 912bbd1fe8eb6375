"""Fill-in-the-Middle on the code of a row: StarCoder's sentinel tokens, PSM and SPM orders, and middles cut
at random characters or at AST boundaries (a statement, a block body, an expression).

Only the response (the code) is ever cut; the prompt template stays in front of it, untouched. Orders
(bigcode Megatron-LM's `permute`, the format StarCoder was trained on):

    PSM: <fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>{middle}
    SPM: <fim_prefix><fim_suffix>{suffix}<fim_middle>{prefix}{middle}

A random middle is any character span (two random cut points); an AST middle is exactly the source text of
one node: a statement, the body of a block (its first to its last statement) or an expression. A model
asked to fill a whole `if` body or a call's arguments learns units a programmer would ask to have filled.
Code that does not parse falls back to a random middle.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<fim_prefix>", "<fim_middle>", "<fim_suffix>"
FIM_TOKENS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")  # the newlines ast counts lines by (not str.splitlines')


@dataclass(frozen=True)
class FimCut:
    text: str  # the reordered code, sentinels included
    order: str  # "psm" or "spm"
    middle: str  # "random", or the AST kind: "statement", "body", "expression"


def psm(prefix: str, middle: str, suffix: str) -> str:
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"


def spm(prefix: str, middle: str, suffix: str) -> str:
    return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}"


def random_span(code: str, rng: random.Random) -> tuple[int, int]:
    """Two distinct inner cut points: prefix, middle and suffix all non-empty."""
    a, b = sorted(rng.sample(range(1, len(code)), 2))
    return a, b


def _offsets(code: str) -> list[int]:
    """Character offset of the start of each line (1-based line numbers index it directly)."""
    starts, pos = [0, 0], 0
    for line in _LINE.findall(code)[:-1]:  # the pattern's last match is the empty string at the end
        pos += len(line)
        starts.append(pos)
    return starts


def _char(code: str, starts: list[int], lineno: int, col: int) -> int:
    """ast's (line, UTF-8 byte column) as a character offset into code."""
    line = code[starts[lineno] :]
    return starts[lineno] + len(line.encode()[:col].decode(errors="ignore"))


def ast_spans(code: str) -> dict[str, list[tuple[int, int]]]:
    """Character spans of statements, block bodies and expressions ({} when the code does not parse).

    Spans covering the whole code are left out: they leave no prefix or suffix to condition on."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return {}
    starts = _offsets(code)

    def span(first: ast.AST, last: ast.AST) -> tuple[int, int]:
        a = _char(code, starts, first.lineno, first.col_offset)
        return a, _char(code, starts, last.end_lineno, last.end_col_offset)

    spans: dict[str, set[tuple[int, int]]] = {"statement": set(), "body": set(), "expression": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            spans["statement"].add(span(node, node))
        elif isinstance(node, ast.expr):
            spans["expression"].add(span(node, node))
        if isinstance(node, ast.stmt | ast.ExceptHandler | ast.match_case):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    spans["body"].add(span(block[0], block[-1]))
    whole = (len(code) - len(code.lstrip()), len(code.rstrip()))
    return {
        kind: sorted(s for s in found if s[1] > s[0] and s != whole and s != (0, len(code)))
        for kind, found in spans.items()
        if any(s[1] > s[0] and s != whole and s != (0, len(code)) for s in found)
    }


def fim_cut(code: str, rng: random.Random, spm_rate: float = 0.5, ast_rate: float = 0.0) -> FimCut | None:
    """The code reordered around one middle; None when the code is too short to cut (under 3 characters).

    Draws, in this order: AST or random middle (ast_rate), the AST kind and node (uniform), or the two cut
    points; then SPM or PSM (spm_rate). Seeded: the same rng state gives the same cut."""
    if len(code) < 3:
        return None
    kind = "random"
    if ast_rate and rng.random() < ast_rate and (spans := ast_spans(code)):
        kind = rng.choice(sorted(spans))
        a, b = rng.choice(spans[kind])
    else:
        a, b = random_span(code, rng)
    order = "spm" if rng.random() < spm_rate else "psm"
    text = (spm if order == "spm" else psm)(code[:a], code[a:b], code[b:])
    return FimCut(text, order, kind)


def fim_transform(text: str, rng: random.Random) -> str:
    """PSM reordering at two random character cut points (text under 3 characters is returned as is)."""
    cut = fim_cut(text, rng, spm_rate=0.0)
    return cut.text if cut else text


def add_fim_tokens(tokenizer) -> list[str]:
    """Add the sentinel tokens a tokenizer lacks (as special tokens: never split, never merged); returns
    those added. The model's embeddings must then grow to len(tokenizer) (tasks/training/model.py)."""
    missing = [t for t in FIM_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    return missing
