"""The teacher's call cache: every finished call on disk, so a re-run (after a kill, or a nightly run over
unchanged sources) asks the teacher only for what it has not answered yet.

One small JSON file per call, named by the sha256 of everything that determines the answer (the backend,
the model's identity, the generation parameters, the prompt; each backend says what else), in a folder per
first two hex digits. A file is written to a temporary name and renamed into place once complete, so a
kill mid-write leaves no half entry, and worker threads (or two processes) never see one another's partial
files. Failed calls are not stored: they may succeed next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def call_key(**parts: Any) -> str:
    """sha256 over the parts as canonical JSON (sorted keys): the same call gives the same key anywhere."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # written atomically, so only outside tampering gets here
            log.warning("teacher cache entry %s unreadable (%s); asking again", path, exc)
            return None

    def put(self, key: str, value: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(value, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())  # the answer was paid for: on disk before it counts as cached
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def count(self) -> int:  # not __len__: an empty cache must not be falsy
        return sum(1 for _ in self.directory.glob("*/*.json"))
