"""The teacher that synthesis asks for new instructions and responses.

The backends share one tiny interface, `Teacher.generate(prompts) -> completions` (None where a completion
was not produced: the budget ran out, or the call failed after its retries), `Teacher.stats()`, the
accounting for the stage report, and `Teacher.close()`. `RemoteTeacher` (remote.py) talks to a server in
one of the dialects of dialects/ (`teacher.backend`: openai, anthropic, ...); `LocalTeacher` (local.py) runs
a transformers model from a local folder, by default the pipeline's own base model, so the offline profile
needs no server. Both keep
every finished call in an on-disk cache (cache.py) when given a folder, and share the counters and budget
caps (accounting.py).
`make_teacher` picks one from the `synthesize.teacher` config section.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tasks.common.teacher import dialects

if TYPE_CHECKING:  # the schema reads dialects.names(): no import of it here at run time
    from pipeline_config.schema import TeacherConfig

LOCAL = "local"
BACKENDS = (LOCAL, *dialects.names())  # teacher.backend


class TeacherError(RuntimeError):
    """The teacher cannot work as configured (a 401, a malformed request, an unreachable URL scheme).

    `transient` tells the Prefect task whether retrying the stage may help; calls that merely failed
    after their retries do not raise at all (they come back as None and are counted).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class Teacher(Protocol):
    def generate(self, prompts: list[str]) -> list[str | None]:
        """One completion per prompt, in order: the generated text only, without the prompt; None where
        none was produced (budget exhausted, or failed after retries)."""
        ...

    def stats(self) -> dict:
        """Counts since the teacher was made (see accounting.Accounting.stats)."""
        ...

    def close(self) -> None:
        """Release what the teacher holds (connections, the model's memory); stats() still answers."""
        ...


def is_remote(backend: str) -> bool:
    """A server answers (it holds the `teacher` concurrency slot); else a model runs here (the GPU's)."""
    return backend != LOCAL


def make_teacher(
    cfg: TeacherConfig, base_model_dir: str | None, seed: int, cache_dir: str | Path | None = None
) -> Teacher:
    """The teacher the config asks for; teacher.model "base" means the pipeline's own base model.

    `cache_dir` (the stage passes <workspace>/teacher_cache/) keeps every finished call unless
    teacher.cache is false; None: no cache.
    """
    from tasks.common.teacher.cache import CallCache

    cache = CallCache(cache_dir) if cache_dir is not None and cfg.cache else None
    if is_remote(cfg.backend):
        from tasks.common.teacher.remote import RemoteTeacher

        return RemoteTeacher(cfg, cache=cache)
    from tasks.common.teacher.local import LocalTeacher

    if cfg.model == "base":
        if base_model_dir is None:
            raise ValueError("teacher.model is 'base' but no base model folder was given")
        return LocalTeacher(base_model_dir, cfg, seed, cache=cache)
    return LocalTeacher(cfg.model, cfg, seed, cache=cache)
