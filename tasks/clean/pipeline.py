"""The clean stage's work: read, redact, filter, dedup, write; a reason for every row it drops.

Two phases, datatrove-style. The per-row work (PII redaction, the row filters, decontamination and each
row's dedup signature: parsing, shingling, MinHash) is independent between rows and runs over chunks of
rows where the config's `executor` says (tasks/common/parallel.py: `workers` local processes, or a Dask
cluster); the dedup filters then run in this process, in input order, on the signatures. The output does
not depend on the executor or the number of workers.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from pipeline_config.schema import CleanConfig, ExecutorConfig, SplitConfig
from tasks.clean import decontaminate, pii
from tasks.clean.dedup import SIGNATURE, dedup_filters, signature
from tasks.clean.filters import row_filters
from tasks.clean.report import write_report
from tasks.clean.rows import QUARANTINE_REASONS, read_rows
from tasks.common.filtering import Filtered, apply_filters
from tasks.common.io import write_jsonl
from tasks.common.parallel import Executor
from tasks.common.progress import Progress
from tasks.common.splits import group_of, is_held_out

log = logging.getLogger(__name__)

LINE = "_line"  # a surviving row as the JSON line pairs.jsonl will hold
POS = "_pos"  # a surviving row's place in its chunk
CHUNK = 2000  # rows per task sent to a worker (at most: on Dask, smaller so that every worker gets some)
PARALLEL_FROM = 4 * CHUNK  # local: fewer rows than this, starting workers costs more than it saves


@dataclass
class Context:
    """Everything the per-row phase needs; pickled once into each worker, which calls prepare()."""

    cfg: CleanConfig
    split: SplitConfig
    seed: int
    everyone: decontaminate.BenchmarkIndex  # benchmarks every row is checked against
    training_only: decontaminate.BenchmarkIndex  # the held-out sets, for rows that are trained on
    tokenizer_dir: str | None = None
    filters: list = field(default_factory=list, repr=False)

    def prepare(self) -> None:
        count_tokens = None
        if self.cfg.max_tokens is not None and self.tokenizer_dir:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
            count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.filters = row_filters(self.cfg, count_tokens)
        if len(self.everyone) or len(self.training_only):
            self.filters.append(
                decontaminate.decontamination_filter(self.everyone, self.training_only, self.held_out)
            )

    def held_out(self, row: dict) -> bool:
        return is_held_out(group_of(row), self.split, self.seed)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "filters": []}  # closures do not pickle; each worker builds its own


@dataclass
class ChunkResult:
    filtered: Filtered
    rejected_at: list[int]  # each rejected row's place in the chunk
    redacted: Counter  # replacements per kind, plus "rows"
    redacted_samples: list[dict]


def process_chunk(rows: list[dict], context: Context) -> ChunkResult:
    """The per-row phase on some rows: redacted, filtered, and the kept ones carrying their signature."""
    redacted, samples, prepared = Counter(), [], []
    for row in rows:
        if context.cfg.pii:
            new, counts = pii.redact(row)
            if counts:
                redacted.update(counts)
                redacted["rows"] += 1
                if len(samples) < context.cfg.report_samples:
                    samples.append({"id": row["id"], "redacted": dict(counts)})
            row = new
        prepared.append(row)
    filtered, rejected_at = Filtered(), []
    for pos, row in enumerate(prepared):  # one row at a time: its signature reuses the parse just done
        kept = len(filtered.kept)
        apply_filters([row], context.filters, into=filtered)
        if len(filtered.kept) > kept:
            filtered.kept[-1] = survivor(row, signature(row, context.cfg), pos)
        else:
            rejected_at.append(pos)
    return ChunkResult(filtered, rejected_at, redacted, samples)


def survivor(row: dict, sig, pos: int) -> dict:
    """What dedup needs of a row, and the row as its output line: encoding it here, in the worker, spares
    the dedup process (the pipeline's bottleneck) from unpickling and re-encoding every row."""
    line = json.dumps(row, ensure_ascii=False)
    return {"id": row["id"], "source": row["source"], SIGNATURE: sig, LINE: line, POS: pos}


def _full_row(entry: dict) -> dict:
    """A survivor that dedup rejected, back as the row plus its reason and detail."""
    extra = {k: v for k, v in entry.items() if k in ("reason", "detail")}
    return {**json.loads(entry[LINE]), **extra}


def run_row_phase(
    rows: list[dict], context: Context, workers: int, executor: Executor
) -> Iterator[ChunkResult]:
    """Chunk results in input order, as they are ready: dedup works on one while workers do the next."""
    options = {"chunk": CHUNK, "workers": workers, "parallel_from": PARALLEL_FROM}
    yield from executor.map_chunks(process_chunk, rows, context, **options)


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def clean_pairs(
    pairs_path: Path | Sequence[Path],
    out_dir: Path,
    cfg: CleanConfig,
    split: SplitConfig | None = None,
    seed: int = 0,
    records_path: Path | None = None,
    tokenizer_dir: str | None = None,
    workers: int | None = None,
    executor: ExecutorConfig | None = None,
) -> dict:
    """Filter pairs JSONL files (the synthesized pairs, the user's datasets: one set, deduplicated across
    them) into `out_dir/pairs.jsonl` (kept) and `out_dir/rejected.jsonl` (every dropped or unreadable row
    with its `reason` and `detail`); write report.md; return the stage report.
    `workers`: local processes (default: the cores, up to 8); `executor`: local or a Dask cluster."""
    out_dir = Path(out_dir)
    split = split or SplitConfig()
    paths = [Path(pairs_path)] if isinstance(pairs_path, str | Path) else [Path(p) for p in pairs_path]
    rows, quarantined = [], []
    for path in paths:
        readable, bad = read_rows(path)
        rows += readable
        quarantined += bad
    if not rows and not cfg.allow_empty:
        raise ValueError(
            f"clean: {' and '.join(map(str, paths))} {'has' if len(paths) == 1 else 'have'} no readable rows "
            f"({len(quarantined)} quarantined "
            f"in {out_dir / 'rejected.jsonl'}); set clean.allow_empty: true to let an empty set through"
        )
    with Executor(executor) as runner:  # the corpus count of decontamination, in chunks where rows are
        indexes = _indexes(cfg, rows, split, seed, records_path)
        count_corpus(indexes, rows, workers or default_workers(), runner)
    context = Context(cfg, split, seed, *indexes, tokenizer_dir)
    rows_in, held_out_rows = len(rows) + len(quarantined), sum(context.held_out(r) for r in rows)
    total = Filtered(counts=Counter(dict.fromkeys(QUARANTINE_REASONS, 0)))
    total.rejected.extend(quarantined)
    total.counts.update(r["reason"] for r in quarantined)
    context.prepare()  # here too: every reason of every filter is counted, zero included
    apply_filters([], context.filters, into=total)
    filters, near = dedup_filters(cfg)
    apply_filters([], filters, into=total)
    redacted, redacted_samples = Counter(), []
    progress = Progress(len(rows), "clean", key="clean-progress", unit="row")
    with Executor(executor) as runner, progress:
        for result in run_row_phase(rows, context, workers or default_workers(), runner):
            progress.update(len(result.filtered.kept) + len(result.filtered.rejected))  # the chunk's rows
            total.counts.update(result.filtered.counts)
            redacted.update(result.redacted)
            redacted_samples.extend(result.redacted_samples)
            first_new = len(total.rejected)
            apply_filters(result.filtered.kept, filters, into=total)
            deduped = [(r[POS], _full_row(r)) for r in total.rejected[first_new:]]
            row_phase = zip(result.rejected_at, result.filtered.rejected, strict=True)
            # a chunk's rejects in input order, so rejected.jsonl is the same however the rows were chunked
            merged = heapq.merge(row_phase, deduped, key=itemgetter(0))
            total.rejected[first_new:] = [row for _, row in merged]
            for row in result.filtered.kept:
                del row[SIGNATURE]  # the MinHash bands and shingles: most of the memory

    with open(out_dir / "pairs.jsonl", "w") as fh:
        fh.writelines(row[LINE] + "\n" for row in total.kept)
    written = len(total.kept)
    write_jsonl(out_dir / "rejected.jsonl", total.rejected)
    report = {
        "rows_in": rows_in,
        "rows_out": written,
        "dropped": dict(total.counts),
        "redacted": {kind: redacted.get(kind, 0) for kind in ("rows", *pii.PLACEHOLDERS)},
        "kept_by_source": dict(Counter(r.get("source", "unknown") for r in total.kept)),
        "by_source": by_source(rows, total),
        "held_out_rows": held_out_rows,
        "benchmark_items": {"every_row": len(context.everyone), "training_rows": len(context.training_only)},
        "decontamination": {
            "every_row": context.everyone.summary(),
            "training_rows": context.training_only.summary(),
        },
        "structural_dedup_policy": cfg.structural_dedup.policy if cfg.structural_dedup.enabled else "off",
    }
    if near:
        report["near_dedup"] = near.report()
    write_report(out_dir, report, total.rejected, redacted_samples, cfg.report_samples)
    return report


def by_source(rows: list[dict], total: Filtered) -> dict[str, dict]:
    """Per source (a generator, a dataset): rows in, kept, and dropped by reason. Rows quarantined before
    they were read have no source and are counted under the reason only."""
    table = {}
    for source, count in Counter(r["source"] for r in rows).items():
        table[source] = {"in": count, "kept": 0, "dropped": Counter()}
    for row in total.kept:
        table[row["source"]]["kept"] += 1
    for row in total.rejected:
        if row.get("source") in table:
            table[row["source"]]["dropped"][row["reason"]] += 1
    return {name: {**entry, "dropped": dict(entry["dropped"])} for name, entry in table.items()}


def _indexes(
    cfg: CleanConfig, rows: list[dict], split: SplitConfig, seed: int, records_path: Path | None
) -> tuple[decontaminate.BenchmarkIndex, decontaminate.BenchmarkIndex]:
    d = cfg.decontaminate
    everyone = decontaminate.humaneval_items() if d.humaneval else []
    for spec in d.files:
        everyone += decontaminate.file_items(Path(spec.path), spec.fields)
    training_only = []
    if d.held_out:
        from tasks.common.io import iter_jsonl

        held = [r for r in rows if is_held_out(group_of(r), split, seed)]
        records = []
        if records_path is not None:
            records = [r for r in iter_jsonl(records_path) if is_held_out(group_of(r), split, seed)]
        training_only = decontaminate.held_out_items(held, records)
    return (
        decontaminate.BenchmarkIndex.build(everyone, d),
        decontaminate.BenchmarkIndex.build(training_only, d),
    )


@dataclass
class Counting:
    """What a worker needs to tally corpus rows against the indexes (see count_corpus)."""

    indexes: list[decontaminate.BenchmarkIndex]

    def prepare(self) -> None:
        pass


def tally_chunk(rows: list[dict], counting: Counting) -> list[decontaminate.Tally]:
    texts = [decontaminate.row_text(row) for row in rows]
    return [index.tally(texts) for index in counting.indexes]


def count_corpus(indexes, rows: list[dict], workers: int, executor: Executor) -> None:
    """How common each item's n-grams and phrases are in this corpus, then `finish` each index: one pass
    over the rows for both indexes, chunked like the row phase (a fifth of a 100k-row clean, serially)."""
    counted = [index for index in indexes if len(index)]
    if not counted:
        return
    options = {"chunk": CHUNK, "workers": workers, "parallel_from": PARALLEL_FROM}
    for tallies in executor.map_chunks(tally_chunk, rows, Counting(counted), **options):
        for index, tally in zip(counted, tallies, strict=True):
            index.add(tally)
    for index in counted:
        index.finish()
