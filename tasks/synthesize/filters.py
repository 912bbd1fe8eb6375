"""Self-Instruct's filters on generated tasks, as predicates for the shared loop (tasks.common.filtering),
and the screening every teacher-written task goes through, cheapest first:

1. the instruction's length in words (Self-Instruct: 3..150), a blacklist of what a text model cannot do
   (images, plots, files, audio...), no start with punctuation or a non-ASCII character;
2. execution verification in the sandbox (verify.py): the solution against the teacher's own tests;
3. ROUGE-L novelty against the pool (novelty.py), last, so that only tasks that are kept join the pool.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TypeVar

from pipeline_config.schema import OssInstructConfig, SelfInstructConfig, VerifyConfig
from tasks.common.filtering import Filter, Filtered, apply_filters
from tasks.synthesize.novelty import NoveltyIndex
from tasks.synthesize.parsing import Task, parse_tasks
from tasks.synthesize.verify import verification_filter

T = TypeVar("T")

# Self-Instruct's list (Wang et al., 2022), plural forms included: tasks a language model cannot do alone
BLACKLIST = (
    *("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps"),
    *("draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram"),
)
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(map(re.escape, BLACKLIST)) + r")\b", re.IGNORECASE)


def word_count_filter(min_words: int, max_words: int) -> Filter:
    def check(row: dict) -> tuple[bool, str | None]:
        n = len(row["instruction"].split())
        if n < min_words:
            return False, "too_few_words"
        return (False, "too_many_words") if n > max_words else (True, None)

    return Filter("word_count", ("too_few_words", "too_many_words"), check)


def blacklist_filter() -> Filter:
    def check(row: dict) -> tuple[bool, str | None] | tuple[bool, str, dict]:
        found = _BLACKLIST_RE.search(row["instruction"])
        return (False, "blacklisted", {"word": found[1].lower()}) if found else (True, None)

    return Filter("blacklist", ("blacklisted",), check)


def first_character_filter() -> Filter:
    def check(row: dict) -> tuple[bool, str | None]:
        first = row["instruction"].lstrip()[:1]
        if first in string.punctuation:
            return False, "starts_with_punctuation"
        return (False, "starts_non_ascii") if not first.isascii() else (True, None)

    return Filter("first_character", ("starts_with_punctuation", "starts_non_ascii"), check)


def instruction_filters(cfg: SelfInstructConfig | OssInstructConfig) -> list[Filter]:
    return [word_count_filter(cfg.min_words, cfg.max_words), blacklist_filter(), first_character_filter()]


def novelty_filter(index: NoveltyIndex, rows: list[dict]) -> Filter:
    """Judges `rows` in order against the pool at once (a kept row joins the pool, so later rows must
    differ from it too); the row that made a candidate too similar is named in the rejection."""
    verdicts = index.filter([row["instruction"] for row in rows])
    by_row = {id(row): match for row, match in zip(rows, verdicts, strict=True)}

    def check(row: dict) -> tuple[bool, str | None] | tuple[bool, str, dict]:
        match = by_row[id(row)]
        if match is None:
            return True, None
        return False, "too_similar", {"rougeL": round(match.f1, 4), "similar_to": match.text}

    return Filter("novelty", ("too_similar",), check)


def screen(
    rows: list[dict],
    cfg: SelfInstructConfig | OssInstructConfig,
    verify: VerifyConfig,
    index: NoveltyIndex,
    into: Filtered,
) -> list[dict]:
    """The rows of one batch that pass every filter, in order; counts, rejects and kept rows accumulate in
    `into`. A row that ran in the sandbox says so in its metadata (`verified`, `verification`)."""
    cheap = apply_filters(rows, instruction_filters(cfg), into=_Batch(into))
    survivors = cheap.kept
    if verify.enabled and survivors:
        survivors = apply_filters(survivors, [verification_filter(verify, survivors)], into=_Batch(into)).kept
    elif not verify.enabled:
        for row in survivors:
            row["metadata"] |= {"verified": None, "verification": "disabled"}
    novel = apply_filters(survivors, [novelty_filter(index, survivors)], into=_Batch(into)).kept
    into.kept.extend(novel)
    return novel


def tasks_of_replies(
    prompted: Sequence[T],
    replies: Sequence[str | None],
    source: str,
    counts: Counter,
    result: Filtered,
    max_tasks: int | None = None,
) -> Iterator[tuple[T, list[Task]]]:
    """Each prompt's context with the tasks its reply holds (the first `max_tasks`), counting the replies
    not produced, those generated and the tasks parsed; what of a reply is not a task (unparseable,
    truncated) is counted and kept as rejected, with the reply it came from."""
    for context, reply in zip(prompted, replies, strict=True):
        if reply is None:  # budget exhausted, or failed after retries: counted by the teacher too
            counts["not_produced"] += 1
            continue
        counts["generated"] += 1
        tasks, problems = parse_tasks(reply, continuation=True, max_tasks=max_tasks)
        for reason, piece in problems:
            counts[reason] += 1
            row = {"reply": reply, "reason": reason, "source": source}
            result.rejected.append(row | ({"piece": piece} if piece.strip() != reply.strip() else {}))
        counts["parsed"] += len(tasks)
        yield context, tasks


class _Batch(Filtered):
    """A Filtered that keeps this batch's survivors apart but counts and collects rejects in `total`."""

    def __init__(self, total: Filtered) -> None:
        super().__init__(kept=[], rejected=total.rejected, counts=total.counts)
