"""tasks.common.teacher: `make_teacher`, which builds the configured backend (the local transformers teacher,
on the base model or a folder, or a remote dialect) with its call cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from teacher_fakes import local_cfg, openai_cfg

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import Teacher, make_teacher
from tasks.common.teacher.local import LocalTeacher
from tasks.common.teacher.remote import RemoteTeacher


def test_make_teacher_base_without_path_raises() -> None:
    with pytest.raises(ValueError, match="base"):
        make_teacher(TeacherConfig(backend="local", model="base"), None, seed=0)


def test_make_teacher_openai() -> None:
    teacher = make_teacher(openai_cfg("http://127.0.0.1:9/v1"), None, seed=0)
    assert isinstance(teacher, RemoteTeacher) and isinstance(teacher, Teacher) and teacher.cache is None


def test_make_teacher_local_base_and_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = TeacherConfig(backend="local", model="base", max_new_tokens=8)
    base = make_teacher(cfg, str(tiny_model_dir), seed=3)
    assert isinstance(base, LocalTeacher) and base.seed == 3
    folder = make_teacher(local_cfg(tiny_model_dir, 0.0), None, seed=0, cache_dir=tmp_path / "tc")
    assert isinstance(folder, LocalTeacher) and folder.cache is not None and (tmp_path / "tc").is_dir()
