"""Progress of a long loop, where a person is looking: a bar with an ETA on the terminal and a Prefect
progress artifact in the UI (the flow run's Artifacts tab), updated as it goes.

The bar goes to the terminal only when there is one (a worker's log would fill with carriage returns);
the artifact only inside a Prefect run, at most every `ARTIFACT_EVERY_S` seconds (each update is a call
to the API server).
"""

from __future__ import annotations

import sys
import time

ARTIFACT_EVERY_S = 5.0


class Progress:
    def __init__(self, total: int, description: str, key: str | None = None, unit: str = "it") -> None:
        from tqdm.auto import tqdm

        self.total, self.done, self.description = max(total, 0), 0, description
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
        self.artifact = _create_artifact(key, description) if key else None
        self.last_sent = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.artifact and (now - self.last_sent >= ARTIFACT_EVERY_S or self.done >= self.total):
            self.last_sent = now
            _update_artifact(self.artifact, self.fraction, self.description)

    @property
    def fraction(self) -> float:
        return 100.0 * min(self.done / self.total, 1.0) if self.total else 100.0

    def close(self) -> None:
        self.bar.close()
        if self.artifact:
            _update_artifact(self.artifact, self.fraction, self.description)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _create_artifact(key: str, description: str):
    if not _in_prefect_run():
        return None
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(0.0, key=key, description=description)


def _update_artifact(artifact_id, progress: float, description: str) -> None:
    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(artifact_id, progress, description=description)
