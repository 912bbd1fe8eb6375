"""tasks.synthesize.novelty against rouge_score itself: the same keep/drop decisions as the naive loop and
the same F1 values, on generated instructions with exact and near repeats, across block boundaries."""

from __future__ import annotations

import random
from functools import cache

import pytest
from rouge_score import rouge_scorer

from tasks.synthesize import novelty
from tasks.synthesize.novelty import NoveltyIndex, rouge_l_f1

SCORER = rouge_scorer.RougeScorer(["rougeL"])
WORDS = (
    "write a python function that returns sorts counts the list of numbers string words in place and "
    "reverse merge two sorted lists dictionary keys values largest smallest element without using "
    "built-in scikit-learn estimator fit transform array matrix rows columns mean median"
).split()


def instructions(count: int, seed: int) -> list[str]:
    """Random instructions over a small vocabulary (so pairs overlap a lot), with exact repeats, near
    repeats (a word changed, dropped or added), punctuation, case changes and token-less strings."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        roll = rng.random()
        if out and roll < 0.12:
            out.append(rng.choice(out))
        elif out and roll < 0.35:
            words = rng.choice(out).split() or ["x"]
            i = rng.randrange(len(words))
            edit = rng.random()
            if edit < 0.4:
                words[i] = rng.choice(WORDS)
            elif edit < 0.7 and len(words) > 1:
                del words[i]
            else:
                words.insert(i, rng.choice(WORDS).upper())
            out.append(" ".join(words) + rng.choice(["", ".", "?", " (again)"]))
        elif roll < 0.37:
            out.append(rng.choice(["", "...", "  ", "!?"]))
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))).capitalize() + ".")
    return out


@cache
def naive(texts: tuple[str, ...], threshold: float, pool: tuple[str, ...] = ()) -> tuple[list, list]:
    """Alpaca's loop: (kept?, max F1 against the pool at that moment) per text."""
    pool = list(pool)
    kept, best = [], []
    for text in texts:
        top = max((SCORER.score(p, text)["rougeL"].fmeasure for p in pool), default=0.0)
        best.append(top)
        kept.append(top <= threshold)
        if top <= threshold:
            pool.append(text)
    return kept, best


@pytest.mark.parametrize(("threshold", "block"), [(0.7, 128), (0.7, 7), (0.7, 1), (0.5, 16)])
def test_decisions_and_f1_match_rouge_score(monkeypatch, threshold: float, block: int) -> None:
    monkeypatch.setattr(novelty, "BLOCK", block)  # across blocks, within a block, one at a time
    texts = instructions(300, seed=3)
    seeds = instructions(12, seed=99)
    want_kept, want_best = naive(tuple(texts), threshold, tuple(seeds))
    index = NoveltyIndex(threshold, seeds)
    verdicts = index.filter(texts)
    assert [v is None for v in verdicts] == want_kept
    assert 0 < sum(want_kept) < len(texts)  # the stream has both kinds
    for verdict, best in zip(verdicts, want_best, strict=True):
        if verdict is not None:  # the match reported is the most similar pooled text, with rouge's F1
            assert verdict.f1 == pytest.approx(best, abs=1e-12) and verdict.f1 > threshold
            assert verdict.text == index.texts[verdict.index]
    assert index.texts == seeds + [t for t, k in zip(texts, want_kept, strict=True) if k]


def test_one_at_a_time_matches_the_batch() -> None:
    texts = instructions(150, seed=5)
    index = NoveltyIndex(0.7)
    kept = []
    for text in texts:
        match = index.most_similar(text)
        kept.append(match is None)
        if match is None:
            index.add(text)
    assert kept == naive(tuple(texts), 0.7)[0]


def test_scores_equal_rouge_score_values() -> None:
    texts = instructions(120, seed=7)
    index = NoveltyIndex(0.7, texts[:60])
    for text in texts[60:]:
        want = [SCORER.score(p, text)["rougeL"].fmeasure for p in texts[:60]]
        got = index.scores(text)
        assert got == pytest.approx(want, abs=1e-9)
        assert got == want  # bit for bit: the same float operations


def test_boundary_f1_exactly_at_threshold_is_kept() -> None:
    # 7 of 10 tokens in common: F1 = 0.7 exactly (as rouge computes it): "exceeds" is false, so kept
    pooled = "a b c d e f g h i j"
    candidate = "a b c d e f g x y z"
    assert SCORER.score(pooled, candidate)["rougeL"].fmeasure == rouge_l_f1(7, 10, 10)
    index = NoveltyIndex(rouge_l_f1(7, 10, 10), [pooled])
    assert index.filter([candidate]) == [None]
    tighter = NoveltyIndex(0.69, [pooled])
    (match,) = tighter.filter([candidate])
    assert match is not None and match.text == pooled and match.f1 == rouge_l_f1(7, 10, 10)


def test_empty_and_tokenless_texts_score_zero() -> None:
    # rapidfuzz alone calls two empty sequences identical; rouge_score gives 0
    index = NoveltyIndex(0.7, ["", "..."])
    assert index.scores("") == [0.0, 0.0]
    assert index.filter(["", "!!", "Sort a list."]) == [None, None, None]
    assert SCORER.score("", "")["rougeL"].fmeasure == 0.0


def test_case_and_punctuation_are_ignored_as_rouge_does() -> None:
    index = NoveltyIndex(0.7, ["Sort the list, in place!"])
    (match,) = index.filter(["sort THE list in place"])
    assert match is not None and match.f1 == 1.0


def test_threshold_must_be_in_range() -> None:
    with pytest.raises(ValueError, match="threshold"):
        NoveltyIndex(0.0)
