"""Stage versions on a remote workspace (an fsspec URL, tasks/common/io.py): publish, resolve, fetch, sweep.

The layout mirrors the local one, with a pointer object where the local workspace has a symlink:

    stages/<stage>/.v-<key>-<host>-<pid>-<rand>/   a version: the stage folder, manifest.json uploaded last
    stages/<stage>/<key>.json                      {"version": ".v-..."}: the commit point of a key
    stages/<stage>/.superseded-<version>           when a forced rebuild replaced that version

There is no lock across machines: a key is a content address, so two workers that build it at once make
two complete, equivalent versions, and the pointer's create-if-absent keeps the first (where the
filesystem has it; elsewhere the last writer wins, and either version is a correct output).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tasks.common.io import (
    download,
    is_file,
    join,
    listdir,
    local_cache,
    read_json,
    read_text,
    remove,
    upload,
    write_text,
)


def pointer(workspace: str, stage: str, key: str) -> str:
    return join(workspace, "stages", stage, f"{key}.json")


def resolve(workspace: str, stage: str, key: str) -> str | None:
    """The URL of the version the key's pointer names, or None when the key was never published."""
    target = pointer(workspace, stage, key)
    return join(workspace, "stages", stage, read_json(target)["version"]) if is_file(target) else None


def publish(workspace: str, stage: str, key: str, folder: Path, force: bool) -> str | None:
    """Upload a finished local stage folder (named like its version) and point the key at it; return the
    version's URL, or None when another writer published the key first (our upload is then removed).
    With `force`, the pointer is replaced and the version it named is marked superseded."""
    version = join(workspace, "stages", stage, folder.name)
    upload(folder, version, last="manifest.json")
    target = pointer(workspace, stage, key)
    previous = read_json(target)["version"] if force and is_file(target) else None
    if previous and previous != folder.name:  # marked before the switch: a sweep seeing the switch sees it
        write_text(join(workspace, "stages", stage, f".superseded-{previous}"), datetime.now(UTC).isoformat())
    record = json.dumps({"version": folder.name, "created": datetime.now(UTC).isoformat(timespec="seconds")})
    if write_text(target, record + "\n", exclusive=not force):
        return version
    remove(version)
    return None


def fetch(version: str, part_name: str, top_level_only: bool = False) -> Path:
    """This machine's copy of a published version, downloaded once into the local cache (a version never
    changes, so the copy never goes stale); `top_level_only`: its reports, tables and plots, not the model
    or dataset folders. `part_name` names the download in progress (a `.v-` name: swept if we die)."""
    workspace, _stages, stage, name = version.rsplit("/", 3)
    full = local_cache(workspace) / "stages" / stage / name
    if full.is_dir():
        return full
    dest = full.with_name(f"{name}.top") if top_level_only else full
    if not dest.is_dir():
        part = local_cache(workspace) / "build" / stage / part_name
        download(version, part, top_level_only)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            part.rename(dest)
        except OSError:  # another process fetched the same version first: the copies are equal
            shutil.rmtree(part, ignore_errors=True)
    return dest


def keep_local(workspace: str, stage: str, folder: Path) -> None:
    """After publishing, the built folder becomes this machine's copy of its version (no download)."""
    kept = local_cache(workspace) / "stages" / stage / folder.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(kept)


def remove_stale(
    workspace: str, now: float, grace_s: float, writer_alive: Callable[[str], bool]
) -> list[str]:
    """This machine's unfinished builds and downloads; versions no pointer names whose writer is dead
    (`writer_alive` judges only this host's: another host's may still be uploading); versions marked
    superseded more than `grace_s` ago. Returns what was removed."""
    removed: list[str] = []
    for entry in sorted((local_cache(workspace) / "build").glob("*/.v-*")):
        if not writer_alive(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    for stage in listdir(join(workspace, "stages")):
        names = listdir(join(workspace, "stages", stage))

        def named(version: str, stage: str = stage) -> bool:  # does its key's pointer name it?
            target = pointer(workspace, stage, version.removeprefix(".v-").split("-", 1)[0])
            return is_file(target) and read_json(target)["version"] == version

        for name in names:
            version = name.removeprefix(".superseded-")
            mark = join(workspace, "stages", stage, f".superseded-{version}")
            folder = join(workspace, "stages", stage, version)
            if name.startswith(".superseded-"):
                if now - datetime.fromisoformat(read_text(mark)).timestamp() <= grace_s:
                    continue
                if version in names and not named(version):
                    remove(folder)
                    removed.append(folder)
                remove(mark)
            elif name.startswith(".v-") and not writer_alive(name) and not is_file(mark) and not named(name):
                remove(folder)
                removed.append(folder)
    return removed
