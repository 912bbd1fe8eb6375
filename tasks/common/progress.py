"""Progress of a long loop, where a person is looking: a bar with an ETA on the terminal and a Prefect
progress artifact in the UI (the flow run's Artifacts tab), updated as it goes.

The bar goes to the terminal only when there is one (a worker's log would fill with carriage returns);
the artifact only inside a Prefect run, at most every `ARTIFACT_EVERY_S` seconds (each update is a call
to the API server). Inside a stage's task (`stage_scope`, entered by flows/stage_tasks.py) every bar of the
stage moves one artifact, keyed `<profile>-<stage>-progress`: evaluate's generation loops show as one
progress line whose description says which loop it is on, not as one artifact per loop.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

ARTIFACT_EVERY_S = 5.0


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from its parts: Prefect takes lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


@dataclass
class StageScope:
    """The stage a Prefect task is running: its progress bars share one artifact."""

    profile: str
    stage: str
    artifact: Any = None  # the progress artifact's id, once the stage's first bar has created it
    loops: int = 0  # bars the stage has started

    @property
    def key(self) -> str:
        return artifact_key(self.profile, self.stage, "progress")


_SCOPE: ContextVar[StageScope | None] = ContextVar("finetune_stage_scope", default=None)


@contextlib.contextmanager
def stage_scope(profile: str, stage: str) -> Iterator[StageScope]:
    token = _SCOPE.set(scope := StageScope(profile, stage))
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


class Progress:
    def __init__(self, total: int, description: str, key: str | None = None, unit: str = "it") -> None:
        """`key`: the artifact's key outside a stage task (inside one, the stage's own key)."""
        from tqdm.auto import tqdm

        self.total, self.done, self.description, self.unit = max(total, 0), 0, description, unit
        # sys.__stderr__: the terminal even while library output goes to the run's log (flows/quiet.py)
        terminal = sys.__stderr__
        self.bar = tqdm(
            total=self.total,
            desc=description,
            unit=unit,
            file=terminal,
            disable=terminal is None or not terminal.isatty(),
            leave=False,
        )
        self.scope = _SCOPE.get()
        if self.scope:
            self.scope.loops += 1
        self.loop = self.scope.loops if self.scope else 1
        self.artifact = self._artifact(key)
        self.last_sent = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.artifact and (now - self.last_sent >= ARTIFACT_EVERY_S or self.done >= self.total):
            self.last_sent = now
            _update_artifact(self.artifact, self.fraction, self.status)

    @property
    def fraction(self) -> float:
        return 100.0 * min(self.done / self.total, 1.0) if self.total else 100.0

    @property
    def status(self) -> str:
        """The artifact's description: what is counted, how far it got, and which of the stage's loops."""
        text = f"{self.description}: {self.done}/{self.total} {self.unit}"
        if self.scope is None:
            return text
        loop = f" (loop {self.loop} of this stage)" if self.loop > 1 else ""
        return f"stage {self.scope.stage}, profile {self.scope.profile}: {text}{loop}"

    def close(self) -> None:
        self.bar.close()
        if self.artifact:
            _update_artifact(self.artifact, self.fraction, self.status)

    def _artifact(self, key: str | None):
        if not _in_prefect_run():
            return None
        if self.scope is None:
            return _create_artifact(key, self.status) if key else None
        if self.scope.artifact is None:
            self.scope.artifact = _create_artifact(self.scope.key, self.status)
        else:  # the stage's next loop: the same artifact starts over
            _update_artifact(self.scope.artifact, 0.0, self.status)
        return self.scope.artifact

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _create_artifact(key: str, description: str):
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(0.0, key=key, description=description)


def _update_artifact(artifact_id, progress: float, description: str) -> None:
    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(artifact_id, progress, description=description)
