"""ROUGE-L novelty against a growing pool of instructions, with the decisions of the naive loop.

Self-Instruct (and Alpaca after it) keeps a candidate instruction unless its ROUGE-L F1 against some pooled
instruction exceeds a bound (0.7), scoring it with `rouge_score` against every pooled instruction: a
quadratic loop of pure-Python LCS tables. `NoveltyIndex` gives the same keep/drop decisions, and the same
F1 values where it reports them, a few hundred times faster:

1. Tokens come from rouge_score's own tokenizer (no stemming, as `RougeScorer(["rougeL"])`); each distinct
   token gets an integer id and a text becomes the string whose code points are its token ids, so
   rapidfuzz's LCS (bit-parallel, in C) runs on token sequences without per-call conversion.
2. Candidates are scored against the pool in blocks with `rapidfuzz.process.cdist` and Indel's normalized
   similarity, 2 LCS / (n + m), which is ROUGE-L F1, with `score_cutoff` just under the threshold: a pair
   whose lengths alone keep it under the bound (2 min(n, m) / (n + m) <= t) is skipped before any LCS, and
   the rest are scored many at a time (SIMD).
3. Every pair that reaches the cutoff is scored again from its exact LCS length with rouge_score's own
   float formula, so the decision `F1 > threshold` and the F1 reported are rouge_score's, bit for bit.
4. Within a block, candidates are resolved in order: a candidate also has to differ from the block's
   earlier candidates that were kept, exactly as the one-at-a-time loop sees them.

Two empty token lists score 0 here, as in rouge_score (rapidfuzz alone would call them identical).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel, LCSseq
from rouge_score.tokenizers import DefaultTokenizer

# Token ids become code points; these skip the C0 controls and the surrogates (not valid in a str).
_FIRST_CODE = 0x100
_SURROGATES = range(0xD800, 0xE000)
# rapidfuzz's cutoff sits this far under the threshold, so its own float rounding never hides a real match
_SLACK = 1e-6
BLOCK = 128  # candidates resolved together against the pool (its matrix: BLOCK x pool float32)
LENGTH_GROUPS = 4  # per block: each scored against the pooled lengths it can reach


@dataclass(frozen=True)
class Match:
    index: int  # of the pooled text
    text: str
    f1: float  # ROUGE-L F1, exactly as rouge_score computes it


def rouge_l_f1(lcs: int, n: int, m: int) -> float:
    """rouge_score's `_score_lcs` + `scoring.fmeasure`: the same operations in the same order."""
    if not n or not m:
        return 0.0
    precision = lcs / n
    recall = lcs / m
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


class NoveltyIndex:
    """A pool of instructions. `filter(texts)` keeps, in order, each text whose ROUGE-L F1 against every
    pooled text (those kept before it included) is at most `threshold`, and adds it to the pool."""

    def __init__(self, threshold: float, texts: Iterable[str] = (), workers: int = -1) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"ROUGE-L threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.workers = workers  # rapidfuzz's threads; -1: all cores
        self.texts: list[str] = []
        self._codes: list[str] = []
        self._tokenizer = DefaultTokenizer(use_stemmer=False)
        self._chars: dict[str, str] = {}  # token -> its id's code point
        for text in texts:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._codes.append(self._encode(text))

    def most_similar(self, text: str) -> Match | None:
        """The pooled text of highest F1 above the threshold (first in pool order on ties), else None."""
        codes = self._encode(text)
        return self._best(codes, self._hits([codes], self._codes)[0])

    def filter(self, texts: Sequence[str]) -> list[Match | None]:
        """One verdict per text, in order: None (novel, now pooled) or the match that rejects it."""
        verdicts: list[Match | None] = []
        for start in range(0, len(texts), BLOCK):
            block = [self._encode(t) for t in texts[start : start + BLOCK]]
            against_pool = self._hits(block, self._codes)
            within = self._hits(block, block)
            kept: dict[int, int] = {}  # block position -> pool index, of the block's kept candidates
            for i, codes in enumerate(block):
                hits = against_pool[i] + [(kept[k], lcs) for k, lcs in within[i] if k in kept]
                match = self._best(codes, hits)
                verdicts.append(match)
                if match is None:
                    kept[i] = len(self.texts)
                    self.texts.append(texts[start + i])
                    self._codes.append(codes)
        return verdicts

    def scores(self, text: str) -> list[float]:
        """The F1 of `text` against every pooled text, in pool order (no cutoff: for checks and reports)."""
        codes = self._encode(text)
        return [rouge_l_f1(LCSseq.similarity(codes, c), len(codes), len(c)) for c in self._codes]

    def _hits(self, queries: list[str], choices: list[str]) -> list[list[tuple[int, int]]]:
        """Per query, (choice index, LCS length) of every choice that may exceed the threshold.

        F1 <= 2 min(n, m) / (n + m), so a query of n tokens can only exceed t against m tokens with
        n t / (2 - t) < m < n (2 - t) / t: queries go by length in groups, each scored against the choices
        of the lengths its group can reach.
        """
        hits: list[list[tuple[int, int]]] = [[] for _ in queries]
        t = self.threshold - _SLACK
        lengths = np.fromiter(map(len, choices), dtype=np.int64, count=len(choices))
        order = sorted((i for i, q in enumerate(queries) if q), key=lambda i: len(queries[i]))
        size = max(1, -(-len(order) // LENGTH_GROUPS))
        for g in range(0, len(order), size):
            rows = order[g : g + size]
            lo, hi = len(queries[rows[0]]), len(queries[rows[-1]])
            cols = np.flatnonzero((lengths > lo * t / (2 - t)) & (lengths < hi * (2 - t) / t))
            if not cols.size:
                continue
            similarity = process.cdist(
                [queries[i] for i in rows],
                [choices[j] for j in cols],
                scorer=Indel.normalized_similarity,
                score_cutoff=t,
                dtype=np.float32,
                workers=self.workers,
            )
            for r, c in zip(*np.nonzero(similarity), strict=True):
                i, j = rows[r], int(cols[c])
                hits[i].append((j, LCSseq.similarity(queries[i], choices[j])))
        return hits

    def _best(self, codes: str, hits: list[tuple[int, int]]) -> Match | None:
        best: Match | None = None
        for j, lcs in sorted(hits):
            f1 = rouge_l_f1(lcs, len(codes), len(self._codes[j]))
            if f1 > self.threshold and (best is None or f1 > best.f1):
                best = Match(j, self.texts[j], f1)
        return best

    def _encode(self, text: str) -> str:
        """The text's rouge_score tokens as integer ids, written as the code points of a string."""
        chars = self._chars
        tokens = self._tokenizer.tokenize(text)
        for token in tokens:
            if token not in chars:
                chars[token] = _code_point(len(chars))
        return "".join([chars[token] for token in tokens])


def _code_point(token_id: int) -> str:
    code = token_id + _FIRST_CODE
    if code >= _SURROGATES.start:
        code += len(_SURROGATES)
    return chr(code)  # over ~1.1M distinct tokens: ValueError from chr, far beyond any instruction pool
