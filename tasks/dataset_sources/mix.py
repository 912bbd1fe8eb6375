"""The user's datasets as pipeline rows: each record mapped by its source's format, bad ones quarantined
with their place and reason, then each source sampled into the mix (`fraction`, then `max_rows`) by a
seed of its own, so adding a source never changes which rows another contributes."""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

from pipeline_config.schema import DatasetSource
from tasks.common.io import write_jsonl
from tasks.common.record_formats import FORMATS, REASONS, BadRecord
from tasks.dataset_sources import read

log = logging.getLogger(__name__)

SOURCE_PREFIX = "dataset:"  # a row's `source`: dataset:<name>
LOGGED = 5  # bad records named in the log per source; all of them are in rejected.jsonl


def source_name(source: DatasetSource) -> str:
    return SOURCE_PREFIX + source.name


def map_records(source: DatasetSource, index: int) -> tuple[list[dict], list[dict]]:
    """(rows, rejected) of one source, in its order."""
    fmt, columns = FORMATS[source.format], source.column_names()
    rows, rejected = [], []
    for number, (place, record) in enumerate(read.records(source, index)):
        try:
            if isinstance(record, read.Malformed):
                raise BadRecord("malformed_json", record.error)
            if not isinstance(record, dict):
                raise BadRecord("not_a_record", f"a {type(record).__name__}, not an object")
            fields = fmt.to_fields(record, columns)
        except BadRecord as bad:
            rejected.append(
                {"source": source_name(source), "place": place, "reason": bad.reason, "detail": str(bad)}
            )
            continue
        metadata = {"dataset": source.name, "place": place}
        if source.group_by is not None and record.get(source.group_by) is not None:
            metadata["group"] = f"{source.name}:{record[source.group_by]}"
        rows.append(
            {"id": f"{source.name}:{number}", **fields, "source": source_name(source), "metadata": metadata}
        )
    for bad in rejected[:LOGGED]:
        log.warning("%s: %s (%s); quarantined in rejected.jsonl", bad["place"], bad["reason"], bad["detail"])
    if len(rejected) > LOGGED:
        log.warning("%s: %d more bad records, all in rejected.jsonl", source.name, len(rejected) - LOGGED)
    return rows, rejected


def sample(rows: list[dict], source: DatasetSource, seed: int) -> list[dict]:
    """A seeded `fraction` of the rows, then at most `max_rows`, in their original order."""
    keep = len(rows) if source.fraction == 1.0 else round(len(rows) * source.fraction)
    if source.max_rows is not None:
        keep = min(keep, source.max_rows)
    if keep == len(rows):
        return rows
    chosen = sorted(random.Random(f"{seed}\x00{source.name}").sample(range(len(rows)), keep))
    return [rows[i] for i in chosen]


def build_mix(sources: list[DatasetSource], out_dir: Path, seed: int) -> dict:
    """Write the mix to `out_dir/pairs.jsonl` and the bad records to `out_dir/rejected.jsonl`; the report:
    per source, where it came from, records read, rejected by reason, and rows in the mix."""
    mixed, rejected, report = [], [], {}
    for index, source in enumerate(sources):
        rows, bad = map_records(source, index)
        if not rows:
            reasons = Counter(b["reason"] for b in bad)
            why = (
                f"all {len(bad)} records were rejected, {dict(reasons)}; the first, {bad[0]['place']}: "
                f"{bad[0]['detail']}"
                if bad
                else "it holds no records"
            )
            raise ValueError(
                f"{read.where(source, index)}: no usable records ({why}); "
                f"check datasets[{index}].format ({source.format!r}) and datasets[{index}].columns "
                f"(read as {source.column_names()})"
            )
        chosen = sample(rows, source, seed)
        mixed += chosen
        rejected += bad
        counts = Counter(b["reason"] for b in bad)
        report[source_name(source)] = {
            "origin": read.origin(source, index),
            "format": source.format,
            "records": len(rows) + len(bad),
            "rejected": {
                reason: counts.get(reason, 0) for reason in ("malformed_json", "not_a_record", *REASONS)
            },
            "rows": len(chosen),
            "conversations": sum("messages" in r for r in chosen),
        }
    write_jsonl(out_dir / "pairs.jsonl", mixed)
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    return {"rows_in": sum(s["records"] for s in report.values()), "rows_out": len(mixed), "sources": report}
