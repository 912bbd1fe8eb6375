"""Word n-grams as 64-bit hashes: the shingles of near-dup detection and the n-grams of decontamination.

Words are runs of letters, digits and underscores, lower-cased, so punctuation, case and layout do not
separate two texts. A word hashes with crc32 (deterministic across processes, unlike `hash`), an n-gram
is a polynomial of its words' hashes computed over the whole text at once with numpy; arithmetic wraps
modulo 2**64, which is what a hash wants.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

WORD = re.compile(r"\w+")
_WORD_HASHES: dict[str, int] = {}  # words repeat across rows: crc32 once per distinct word
_BASE = np.uint64(0x100000001B3)  # the FNV prime: odd, so no information is shifted out


def normalize(text: str) -> str:
    """Lower-cased with whitespace runs folded to one space: the form substring matches compare."""
    return " ".join(text.lower().split())


@lru_cache(maxsize=8)  # near-dup and decontamination ask for the same row's words in turn
def word_hashes(text: str) -> np.ndarray:
    words = WORD.findall(text.lower())
    memo = _WORD_HASHES
    if len(memo) > 1 << 20:  # a bound on memory for corpora with very many distinct words
        memo.clear()
    hashes = [memo.get(w) or memo.setdefault(w, zlib.crc32(w.encode()) or 1) for w in words]
    return np.array(hashes, dtype=np.uint64)


@lru_cache(maxsize=16)  # decontamination tests one row against two indexes
def ngram_hashes(text: str, n: int, distinct: bool = True) -> np.ndarray:
    """The hashes of the text's word n-grams, sorted and distinct unless `distinct` is False (in text
    order: lookups do not need the sort); a text shorter than n words is one n-gram. Callers must not
    modify the array (it is cached)."""
    words = word_hashes(text)
    if len(words) == 0:
        return words
    if len(words) < n:
        n = len(words)
    with np.errstate(over="ignore"):
        grams = np.zeros(len(words) - n + 1, dtype=np.uint64)
        for j in range(n):
            grams = grams * _BASE + words[j : len(words) - n + 1 + j]
    return np.unique(grams) if distinct else grams


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, distinct hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    common = len(np.intersect1d(a, b, assume_unique=True))
    return common / (len(a) + len(b) - common)


def contains(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which `values` are in `sorted_keys` (sorted, distinct): a binary search per value, where np.isin
    would sort the (large, fixed) keys again on every call."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    found = np.searchsorted(sorted_keys, values)
    found[found == len(sorted_keys)] = 0
    return sorted_keys[found] == values
