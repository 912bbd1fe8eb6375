"""Dedup: exact, conflicting outputs, structural and near-duplicate, keeping the first row of each group.

Structural: the same code up to the names it binds (tasks/clean/structure.py) is a duplicate under the
default policy `same_task` only when the prompt is near-identical too, the code's bound names
canonicalised in it: the same few lines of code answer many different instructions.

These filters remember the rows they keep, so they run last and in one process, in input order, on a
`Signature` the workers computed for each row (the costly part: parsing, shingling, MinHash). Only rows
that every other filter kept enter their memory: a duplicate of a rejected row is not lost.

Near-dup: datasketch's MinHash over word n-gram shingles, LSH banding to find candidates, then the exact
Jaccard of the two shingle sets decides. The banding is chosen so that a pair at the threshold becomes a
candidate with probability `candidate_recall` (b bands of r rows: 1 - (1 - t^r)^b), the largest r that
achieves it, so that as few dissimilar pairs as possible are checked; datasketch's own choice at
threshold 0.7 balances misses against false candidates and misses about 1 in 10 pairs between 0.75 and
0.95. The band index is a dict per band from the band's hash (computed in the workers) to the kept rows
in that bucket: datasketch's MinHashLSH keeps a set per bucket and every row's band keys twice, which
took the clean stage to 2.3 GB at 100k rows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datasketch import MinHash

from pipeline_config.schema import CleanConfig, NearDedupConfig
from pipeline_config.schema.clean import StructuralDedupConfig
from tasks.clean.decontaminate import row_fields, row_text
from tasks.clean.filters import output_trees
from tasks.clean.shingles import WORD, jaccard, ngram_hashes
from tasks.clean.structure import structure_and_names
from tasks.common.filtering import Filter

SIGNATURE = "_signature"  # the row field that carries its Signature between the workers and dedup
MINHASH_SEED = 1  # fixed: a row's MinHash must not depend on the run
_BAND_MIX = np.random.default_rng(0).integers(1, 2**63, size=512, dtype=np.uint64) | np.uint64(1)


@dataclass
class Signature:
    exact: str  # instruction, input and output with case and whitespace folded
    prompt: str  # the same for instruction and input: one prompt, one answer
    output: str
    structure: str | None  # tasks/clean/structure.py; None when the output does not parse
    task: np.ndarray | None  # word 3-grams of instruction + input, the code's bound names canonicalised
    shingles: np.ndarray | None  # sorted distinct word n-gram hashes
    bands: np.ndarray | None  # one hash per LSH band of the MinHash


@lru_cache(maxsize=2)
def _minhasher(num_perm: int) -> MinHash:
    """One MinHash per process, cleared for each row: building one draws its permutations (~0.2 ms)."""
    return MinHash(num_perm=num_perm, seed=MINHASH_SEED, hashfunc=int, scheme="affine64")


def _digest(*parts: str) -> str:
    folded = "\x00".join(" ".join(p.lower().split()) for p in parts)  # \x00: field boundaries count
    return hashlib.blake2b(folded.encode(), digest_size=16).hexdigest()


TASK_NGRAM = 3  # words: a prompt is short, and one changed word must not hide that it is the same task


def canonical_prompt(prompt: str, names: dict[str, str]) -> str:
    """The prompt with the code's bound names replaced by their numbers: between backticks where it has
    any (so that "the numbers in `numbers`" keeps its noun), else wherever they occur."""

    def rename(text: str) -> str:
        return WORD.sub(lambda m: names.get(m[0], m[0]), text)

    return re.sub(r"`[^`]*`", lambda m: rename(m[0]), prompt) if "`" in prompt else rename(prompt)


def signature(row: dict, cfg: CleanConfig) -> Signature:
    instruction, input_text, output = row_fields(row)
    structure = task = None
    if cfg.structural_dedup.enabled and (trees := output_trees(output)):
        found = [structure_and_names(tree) for tree in trees]
        if None not in found:
            structure = "|".join(key for key, _ in found)
            names: dict[str, str] = {}
            for _, numbering in found:
                names = numbering | names  # the first block's numbering wins
            task = ngram_hashes(canonical_prompt(f"{instruction}\n{input_text}", names), TASK_NGRAM)
    shingles = bands = None
    if (near := cfg.near_dedup).enabled:
        shingles = ngram_hashes(row_text(row), near.ngram)
        m = _minhasher(near.num_perm)
        m.clear()
        m.update_batch(shingles.tolist())
        b, r = lsh_bands(near.num_perm, near.threshold, near.candidate_recall)
        with np.errstate(over="ignore"):  # a hash of the band's r values; wrapping is fine
            bands = (m.hashvalues[: b * r].reshape(b, r) * _BAND_MIX[:r]).sum(axis=1, dtype=np.uint64)
    return Signature(
        exact=_digest(instruction, input_text, output),
        prompt=_digest(instruction, input_text),
        output=_digest(output),
        structure=structure,
        task=task,
        shingles=shingles,
        bands=bands,
    )


def exact_dedup_filter() -> Filter:
    seen: dict[str, str] = {}

    def check(row: dict):
        key = row[SIGNATURE].exact
        if key in seen:
            return False, "duplicate", {"rule": "exact", "kept": seen[key]}
        seen[key] = row["id"]
        return True, None

    return Filter("exact_dedup", ("duplicate",), check)


def conflicting_output_filter() -> Filter:
    """Self-Instruct's rule: the same instruction and input must not have two different outputs. The
    first kept answer stays: one prompt, one target."""
    answers: dict[str, tuple[str, str]] = {}

    def check(row: dict):
        sig = row[SIGNATURE]
        if sig.prompt in answers and answers[sig.prompt][0] != sig.output:
            return (
                False,
                "conflicting_output",
                {"rule": "one_output_per_prompt", "kept": answers[sig.prompt][1]},
            )
        answers.setdefault(sig.prompt, (sig.output, row["id"]))
        return True, None

    return Filter("conflicting_outputs", ("conflicting_output",), check)


def structural_dedup_filter(cfg: StructuralDedupConfig) -> Filter:
    """The same code up to names is a duplicate under `same_code`; under `same_task` only when the prompt
    is near-identical too (its word 3-gram Jaccard, names canonicalised, at least `task_threshold`): the
    same few lines of code answer many different instructions."""
    seen: dict[str, list[tuple[str, np.ndarray]]] = {}

    def check(row: dict):
        sig = row[SIGNATURE]
        if sig.structure is None:
            return True, None
        kept = seen.setdefault(sig.structure, [])
        for kept_id, task in kept:
            if cfg.policy == "same_code":
                return False, "structural_duplicate", {"rule": "same_code", "kept": kept_id}
            if (similarity := jaccard(sig.task, task)) >= cfg.task_threshold:
                detail = {"rule": "same_task", "kept": kept_id, "task_jaccard": round(similarity, 3)}
                return False, "structural_duplicate", detail
        kept.append((row["id"], sig.task))
        return True, None

    return Filter("structural_dedup", ("structural_duplicate",), check)


@lru_cache(maxsize=4)
def lsh_bands(num_perm: int, threshold: float, recall: float) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band whose banding still proposes a pair at `threshold`
    with probability `recall`."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


class NearDedup:
    """The near-dup filter and what it saw (for the report)."""

    def __init__(self, cfg: NearDedupConfig):
        self.cfg = cfg
        self.bands, self.rows_per_band = lsh_bands(cfg.num_perm, cfg.threshold, cfg.candidate_recall)
        self.buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self.kept: list[tuple[str, np.ndarray]] = []  # (row id, shingles) of each kept row
        self.candidates_checked = 0

    def check(self, row: dict):
        sig = row[SIGNATURE]
        bands = sig.bands.tolist()
        hits = [bucket.get(key) for bucket, key in zip(self.buckets, bands, strict=True)]
        found: set[int] = set()
        for hit in hits:
            if hit is not None:
                found.update(hit) if isinstance(hit, list) else found.add(hit)
        best_index, best = None, 0.0
        for index in found:
            self.candidates_checked += 1
            similarity = jaccard(sig.shingles, self.kept[index][1])
            if similarity >= self.cfg.threshold and similarity > best:
                best_index, best = index, similarity
        if best_index is not None:
            cluster = self.kept[best_index][0]
            return False, "near_duplicate", {"rule": "minhash", "cluster": cluster, "jaccard": round(best, 3)}
        index = len(self.kept)
        for bucket, key, hit in zip(self.buckets, bands, hits, strict=True):
            if hit is None:
                bucket[key] = index  # most buckets hold one row: an int, not a list
            elif isinstance(hit, list):
                hit.append(index)
            else:
                bucket[key] = [hit, index]
        self.kept.append((row["id"], sig.shingles))
        return True, None

    def report(self) -> dict:
        return {
            "bands": self.bands,
            "rows_per_band": self.rows_per_band,
            "candidates_checked": self.candidates_checked,
        }


def dedup_filters(cfg: CleanConfig) -> tuple[list[Filter], NearDedup | None]:
    filters = []
    if cfg.exact_dedup:
        filters.append(exact_dedup_filter())
    if cfg.conflicting_outputs:
        filters.append(conflicting_output_filter())
    if cfg.structural_dedup.enabled:
        filters.append(structural_dedup_filter(cfg.structural_dedup))
    near = NearDedup(cfg.near_dedup) if cfg.near_dedup.enabled else None
    if near:
        filters.append(Filter("near_dedup", ("near_duplicate",), near.check))
    return filters, near
