"""Where a dataset's records come from, and what keys them: local files (by content), a `save_to_disk`
folder (by content) or a hub dataset (by the commit its local snapshot holds).

A hub dataset is read from the Hugging Face cache's snapshot of its repository (`snapshot_download`:
downloaded where the hub is reachable, only looked up when `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` is
set), then loaded by `datasets` from that folder, which reads the repository's own layout (its README's
configs, its split files). So the key is the commit, offline as online, and a run never reads a dataset
other than the one its key names.

Records come with where they are: `(place, record)`, place a line number (JSONL, CSV), an index (JSON
array, Parquet, Arrow), so a bad record is quarantined with its place and the rest goes on.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from pipeline_config.schema import DatasetSource
from tasks.common.io import hash_path

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class DatasetUnavailable(RuntimeError):
    """A dataset that cannot be read here: missing files, a hub dataset the offline cache lacks."""


def where(source: DatasetSource, index: int) -> str:
    return f"datasets[{index}] ({source.name!r})"


def offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def local_files(source: DatasetSource, index: int) -> list[Path]:
    """The files `files` names, globs expanded and sorted; an unmatched glob or a suffix not read here is an
    error."""
    found: list[Path] = []
    for pattern in source.files:
        matched = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matched:
            raise DatasetUnavailable(f"{where(source, index)}.files: {pattern!r} matches no file")
        for name in matched:
            path = Path(name)
            if path.is_dir() or path.suffix.lower() not in SUFFIXES:
                raise DatasetUnavailable(
                    f"{where(source, index)}.files: {name} is not a {', '.join(SUFFIXES)} file"
                )
            found.append(path)
    return list(dict.fromkeys(found))


def hub_snapshot(source: DatasetSource, index: int) -> Path:
    """The cache's snapshot of the hub dataset at its revision (downloaded first unless offline)."""
    return _snapshot(source.hub, source.revision, offline(), where(source, index))


@cache  # planning, Prefect's cache key and the stage itself ask for it in one process
def _snapshot(repo: str, revision: str | None, is_offline: bool, place: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(repo, repo_type="dataset", revision=revision, local_files_only=is_offline)
        )
    except (LocalEntryNotFoundError, OSError, ValueError) as error:
        why = "the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and" if is_offline else "it"
        raise DatasetUnavailable(
            f"{place}.hub: the dataset {repo!r} (revision {revision or 'main'}) cannot be read: {why} is not "
            f"in the local Hugging Face cache {HF_HUB_CACHE}; cache it where the hub is reachable with "
            f"`hf download {repo} --repo-type dataset` and copy that cache here (or set HF_HUB_CACHE to it)"
            f"{'' if is_offline else f' ({type(error).__name__}: {error})'}"
        ) from None


def identity(source: DatasetSource, index: int) -> dict:
    """What the stage key holds for this source: the content or the commit it reads."""
    if source.hub:
        return {"hub": source.hub, "commit": hub_snapshot(source, index).name}  # snapshots/<commit sha>
    if source.disk:
        folder = Path(source.disk)
        if not (folder / "dataset_dict.json").is_file() and not (folder / "dataset_info.json").is_file():
            raise DatasetUnavailable(f"{where(source, index)}.disk: {folder} is not a save_to_disk folder")
        return {"disk": hash_path(folder)}
    return {"files": {str(p): hash_path(p) for p in local_files(source, index)}}


def origin(source: DatasetSource, index: int) -> str:
    """For people: where the rows came from."""
    if source.hub:
        return f"hub {source.hub}@{hub_snapshot(source, index).name}"
    return f"disk {source.disk}" if source.disk else f"files {', '.join(source.files)}"


def records(source: DatasetSource, index: int) -> Iterator[tuple[str, object]]:
    """(place, record) for every record of the source, in order."""
    if source.files:
        for path in local_files(source, index):
            yield from _file_records(path)
    elif source.disk:
        yield from _arrow_records(_load_disk(source, index), source.disk)
    else:
        yield from _arrow_records(_load_hub(source, index), source.hub)


def _file_records(path: Path) -> Iterator[tuple[str, object]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    yield f"{path}:{number}", _json_line(line)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data.get("data") if isinstance(data, dict) else data  # a bare array, or {"data": [...]}
        if not isinstance(rows, list):
            raise DatasetUnavailable(f'{path}: a JSON file of records is an array (or {{"data": [...]}})')
        for number, row in enumerate(rows):
            yield f"{path}[{number}]", row
    elif suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                yield f"{path}:{reader.line_num}", row
    else:
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}[{number}]", row


class Malformed:
    """A line that is not JSON: mapped as a bad record, not raised, so the rest of the file goes on."""

    def __init__(self, error: str) -> None:
        self.error = error


def _json_line(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        return Malformed(str(error))


def _arrow_records(dataset, name: str) -> Iterator[tuple[str, object]]:
    for number, row in enumerate(dataset):
        yield f"{name}[{number}]", row


def _pick_split(loaded, source: DatasetSource, index: int):
    from datasets import DatasetDict

    if not isinstance(loaded, DatasetDict):
        return loaded
    if source.split not in loaded:
        raise DatasetUnavailable(
            f"{where(source, index)}.split: {source.split!r} is not a split of it; its splits: "
            f"{', '.join(loaded)}"
        )
    return loaded[source.split]


def _load_disk(source: DatasetSource, index: int):
    from datasets import load_from_disk

    return _pick_split(load_from_disk(source.disk), source, index)


def _load_hub(source: DatasetSource, index: int):
    from datasets import load_dataset

    snapshot = hub_snapshot(source, index)
    try:
        loaded = load_dataset(str(snapshot), source.subset)
    except ValueError as error:  # an unknown subset, a repository datasets cannot read
        raise DatasetUnavailable(f"{where(source, index)}: {source.hub} at {snapshot}: {error}") from None
    return _pick_split(loaded, source, index)
