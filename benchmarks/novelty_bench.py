"""novelty_filter: Self-Instruct's ROUGE-L novelty filter, ours (tasks/synthesize/novelty.py) against the
naive loop Alpaca runs (rouge_score's scorer against every pooled instruction), on one synthetic stream.

The stream: instructions composed from a coding vocabulary (openers, verbs, adjectives, nouns, containers,
qualifiers; most pairs share only a few words, as real instructions do), with exact repeats and near
repeats (one or two words swapped, dropped or added) of earlier ones, fed through the filter in order; a
kept instruction joins the pool. The naive loop's decisions must be ours, one by one.

Run alone: `python -m benchmarks.run novelty_filter`.
"""

from __future__ import annotations

import random

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs, timed

THRESHOLD = 0.7

OPENERS = (
    "Write a Python function that",
    "Implement a helper which",
    "Create code that",
    "Using scikit-learn,",
    "Fix the bug in a routine that",
    "Build a small class that",
    "Given some input data, write a script that",
    "In plain Python,",
    "Design an efficient function that",
    "Refactor this snippet so it",
    "Complete the method that",
    "Without external libraries, write code that",
)
VERBS = (
    "counts sorts reverses merges filters groups normalizes parses validates flattens deduplicates "
    "compresses encodes decodes scales ranks splits joins rotates transposes summarizes tokenizes "
    "interpolates clips standardizes imputes samples shuffles partitions aggregates caches hashes "
    "benchmarks serializes compares masks pads truncates averages labels"
).split()
ADJECTIVES = (
    "sparse nested missing duplicate negative weighted sorted unique empty noisy categorical numeric "
    "binary hourly daily consecutive overlapping adjacent rare frequent largest smallest recent stale "
    "invalid encoded"
).split()
NOUNS = (
    "words vowels integers floats strings intervals matrices vectors rows columns labels features "
    "timestamps dates emails urls digits primes tuples dictionaries keys values nodes edges samples "
    "predictions probabilities weights scores residuals outliers tokens sentences paragraphs coordinates "
    "polygons fractions bits bytes events clusters estimators pipelines folds splits"
).split()
CONTAINERS = (
    "a list|a string|a numpy array|a table of rows|a dictionary|a nested list|a sparse matrix|a generator|"
    "a CSV line|a JSON object|a deque|a set|a tuple of pairs|a DataFrame|a text file's lines|a stream|"
    "two arrays|a graph's adjacency list|a config mapping|a log record"
).split("|")
QUALIFIERS = (
    "ignoring case|in linear time|without using built-in sort|keeping the original order|in place|"
    "with a tolerance of 1e-9|using a stable algorithm|returning a new object|for negative inputs too|"
    "raising ValueError on empty input|following scikit-learn conventions|by a given key|"
    "up to a maximum depth|with optional weights|using only the standard library|for any iterable|"
    "lazily|in descending order|rounded to two decimals|skipping missing values|with type hints|"
    "and document every parameter|then print a short report|in a thread-safe way"
).split("|")
EXTRA = "quickly carefully efficiently correctly exactly safely also first".split()


def fresh_instruction(rng: random.Random) -> str:
    parts = [rng.choice(OPENERS), rng.choice(VERBS), "the", rng.choice(ADJECTIVES), rng.choice(NOUNS)]
    parts += ["of", rng.choice(CONTAINERS), rng.choice(QUALIFIERS)]
    if rng.random() < 0.5:
        parts += ["and then", rng.choice(VERBS), "every", rng.choice(ADJECTIVES), rng.choice(NOUNS)]
    return " ".join(parts) + "."


def near_repeat(rng: random.Random, text: str) -> str:
    """`text` with one or two words swapped, dropped or added."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i, edit = rng.randrange(len(words)), rng.random()
        if edit < 0.4:
            words[i] = rng.choice(NOUNS + VERBS)
        elif edit < 0.7 and len(words) > 3:
            del words[i]
        else:
            words.insert(i, rng.choice(EXTRA))
    return " ".join(words)


def synthetic_instructions(count: int, seed: int = 0) -> list[str]:
    """`count` instructions: ~80% fresh from the vocabulary, ~10% exact repeats, ~10% near repeats."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if not out or roll >= 0.20:
            out.append(fresh_instruction(rng))
        else:
            earlier = rng.choice(out)
            out.append(earlier if roll < 0.10 else near_repeat(rng, earlier))
    return out


def naive_filter(instructions: list[str], threshold: float = THRESHOLD) -> list[bool]:
    """Alpaca's loop: score each candidate against every pooled instruction with rouge_score."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool: list[str] = []
    kept = []
    for text in instructions:
        best = max((scorer.score(p, text)["rougeL"].fmeasure for p in pool), default=0.0)
        keep = best <= threshold
        kept.append(keep)
        if keep:
            pool.append(text)
    return kept


def our_filter(instructions: list[str], threshold: float = THRESHOLD) -> list[bool]:
    from tasks.synthesize.novelty import NoveltyIndex

    index = NoveltyIndex(threshold)
    kept = []
    for text in instructions:
        keep = index.most_similar(text) is None
        kept.append(keep)
        if keep:
            index.add(text)
    return kept


@benchmark("novelty_filter")
def novelty_filter(compared: int = 2_000, large: int = 50_000) -> dict:
    """ROUGE-L novelty (Self-Instruct's filter) on 2,000 instructions: the naive rouge_score loop once (~2
    minutes, where run-to-run noise is a small share) against ours, the median of 5, warm-up excluded,
    identical decisions asserted. value: our seconds; ratio = naive / ours (goal >= 100); 50,000 instructions
    through ours alone in detail (goal <= 60 s on 2 cores)."""
    stream = synthetic_instructions(compared, seed=0)
    naive_filter(synthetic_instructions(20, seed=2))  # imports and first calls, outside the timed runs
    naive = time_runs({"naive": lambda: naive_filter(stream)}, repeats=1, warmup=0)["naive"]
    ours = time_runs({"ours": lambda: our_filter(stream)}, repeats=5)["ours"]
    if ours.result != naive.result:
        pairs = zip(ours.result, naive.result, strict=True)
        first = next(i for i, (a, b) in enumerate(pairs) if a != b)
        raise AssertionError(f"decisions differ first at instruction {first}: {stream[first]!r}")

    big = synthetic_instructions(large, seed=1)
    big_run = timed(lambda: our_filter(big))
    return {
        "value": round(ours.median, 4),
        "unit": "s",
        "ratio": round(naive.median / ours.median, 1),
        "detail": {
            "instructions": compared,
            "kept": sum(ours.result),
            "identical_decisions": True,
            "naive_s": round(naive.median, 2),
            "ours_s": round(ours.median, 4),
            "ours_runs_s": [round(r, 4) for r in ours.seconds],
            "timing": "warm-up excluded; naive once, ours the median of 5",
            "large_instructions": large,
            "large_kept": sum(big_run.result),
            "large_s": round(big_run.seconds, 2),
            "threshold": THRESHOLD,
            "ratio_means": "naive rouge_score loop / ours, same decisions (higher is better; goal >= 100; "
            "large_s goal <= 60)",
        },
    }
