"""The teacher that synthesis asks for new instructions and responses.

Two backends share one tiny interface, `Teacher.generate(prompts) -> completions`:
`OpenAITeacher` (openai.py) talks to any OpenAI-compatible `/chat/completions` server; `LocalTeacher`
(local.py) runs a transformers model from a local folder, by default the pipeline's own base model, so the
offline profile needs no server. `make_teacher` picks one from the `synthesize.teacher` config section.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pipeline_config.schema import TeacherConfig


class TeacherError(RuntimeError):
    """The teacher could not produce a completion.

    `transient` tells the Prefect task whether retrying the stage may help: a server that stayed busy
    through every retry may recover; a 401 or a malformed request will fail the same way again.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class Teacher(Protocol):
    def generate(self, prompts: list[str]) -> list[str]:
        """Return one completion per prompt, in order: the generated text only, without the prompt."""
        ...


def make_teacher(cfg: TeacherConfig, base_model_dir: str | None, seed: int) -> Teacher:
    """The teacher the config asks for; teacher.model "base" means the pipeline's own base model."""
    if cfg.backend == "openai":
        from tasks.common.teacher.openai import OpenAITeacher

        return OpenAITeacher(cfg)
    from tasks.common.teacher.local import LocalTeacher

    if cfg.model == "base":
        if base_model_dir is None:
            raise ValueError("teacher.model is 'base' but no base model folder was given")
        return LocalTeacher(base_model_dir, cfg, seed)
    return LocalTeacher(cfg.model, cfg, seed)
