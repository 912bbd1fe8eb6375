"""Cache keys you can trust: a key changes whenever the output could (code a stage imports, a path input's
content, a library version, the scraped package, the model) and stays put when only something the stage
never reads changed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from flows.finetune import DAG, STAGES
from flows.runner import plan
from pipeline_config import load_config
from tasks.common import versions
from tasks.common.versions import code_version, dependency_files

REPO = Path(__file__).resolve().parents[3]


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A miniature project: two stage packages sharing tasks/common modules in different ways."""
    write(
        tmp_path,
        {
            "tasks/__init__.py": "",
            "tasks/common/__init__.py": "",
            "tasks/common/models.py": "from tasks.common.io import X\n",
            "tasks/common/io.py": "X = 1\n",
            "tasks/common/unused.py": "Y = 1\n",
            "tasks/a/__init__.py": "from tasks.a.work import f\n",
            "tasks/a/work.py": "def f():\n    from tasks.common import models\n",  # inside a function
            "tasks/a/data/seeds.jsonl": '{"x": 1}\n',
            "tasks/b/__init__.py": "from .core import g\n",  # a relative import
            "tasks/b/core.py": "from ..common.io import X\n",
        },
    )
    monkeypatch.setattr(versions, "REPO_ROOT", tmp_path)
    return tmp_path


def test_code_version_follows_imports_transitively(project):
    rel = lambda pkg: sorted(p.relative_to(project).as_posix() for p in dependency_files(pkg))  # noqa: E731
    assert rel("tasks.a") == [
        "tasks/__init__.py",
        "tasks/a/__init__.py",
        "tasks/a/data/seeds.jsonl",
        "tasks/a/work.py",
        "tasks/common/__init__.py",
        "tasks/common/io.py",
        "tasks/common/models.py",
    ]
    assert "tasks/common/models.py" not in rel("tasks.b") and "tasks/common/io.py" in rel("tasks.b")


@pytest.mark.parametrize(
    ("edited", "changed"),
    [
        ("tasks/common/models.py", {"tasks.a"}),  # a helper only a imports
        ("tasks/common/io.py", {"tasks.a", "tasks.b"}),  # imported by both (a through models.py)
        ("tasks/a/data/seeds.jsonl", {"tasks.a"}),  # a data file of the package
        ("tasks/common/unused.py", set()),  # imported by nobody
    ],
)
def test_editing_a_file_changes_exactly_the_dependent_versions(project, edited, changed):
    before = {pkg: code_version(pkg) for pkg in ("tasks.a", "tasks.b")}
    (project / edited).write_text((project / edited).read_text() + "\n# edited\n")
    after = {pkg: code_version(pkg) for pkg in ("tasks.a", "tasks.b")}
    assert {pkg for pkg in before if before[pkg] != after[pkg]} == changed


def test_real_stages_depend_on_the_shared_modules_they_use():
    users = {
        m.SPEC.name for m, _ in DAG if REPO / "tasks/common/models.py" in dependency_files(m.SPEC.package)
    }
    assert users == {"synthesize", "train", "evaluate", "register"}  # the stages that load a model
    every = [
        m.SPEC.name for m, _ in DAG if REPO / "tasks/common/stage.py" in dependency_files(m.SPEC.package)
    ]
    assert every == list(STAGES)  # the contract itself is part of every key


# --- keys of the real DAG under one config, one ingredient changed at a time -----------------------------


@pytest.fixture
def keys_of(tiny_profile):
    """keys_of(edit=None) -> every stage's key of the tiny profile after `edit(raw)`."""
    return lambda edit=None: plan(load_config(tiny_profile(edit)), DAG).keys


def changed(a: dict, b: dict) -> set[str]:
    return {s for s in a if a[s] != b[s]}


DOWNSTREAM_OF_TRAIN = {"train", "evaluate", "register"}


def test_student_training_settings_leave_data_stages_alone(keys_of, tmp_path):
    base = keys_of()
    lr = keys_of(lambda raw: raw["train"].update(learning_rate=0.5))
    assert changed(base, lr) == DOWNSTREAM_OF_TRAIN


def test_synthesize_follows_the_model_only_when_it_is_the_teacher(keys_of, tmp_path):
    def bigger_model(raw):
        raw["model"]["source"]["hidden_size"] = 64

    base, model = keys_of(), keys_of(bigger_model)
    # the local teacher is the base model; no dataset is configured
    assert changed(base, model) == set(STAGES) - {"scrape", "datasets"}

    def openai_teacher(raw):
        raw["synthesize"]["teacher"] = {
            "backend": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
        }

    remote = keys_of(openai_teacher)
    remote_model = keys_of(lambda raw: (openai_teacher(raw), bigger_model(raw)))
    assert changed(remote, remote_model) == {"base_model", "tokenize", "train", "evaluate", "register"}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the CPU's precision choice")
def test_precision_auto_is_keyed_by_what_it_resolves_to_here(keys_of, monkeypatch):
    """The same profile (precision auto) on a CPU with native bf16 and on one without: the stages whose
    models compute differently get other keys (the local teacher: synthesize and all below it; training;
    the evaluation's generations), the rest keep theirs; pinned to fp32, no stage depends on the CPU."""
    from tasks.common import models

    fp32 = {"train": {"precision": "fp32"}, "evaluate": {"precision": "fp32"}}

    def pinned(raw):
        for section, values in fp32.items():
            raw[section].update(values)
        raw["synthesize"]["teacher"].update(precision="fp32")

    only_eval = lambda raw: raw["evaluate"].update(precision="fp32")  # noqa: E731
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    native, native_pinned = keys_of(), keys_of(pinned)
    assert changed(native, keys_of(only_eval)) == {"evaluate", "register"}
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    emulated, emulated_pinned = keys_of(), keys_of(pinned)
    assert changed(native, emulated) == set(STAGES) - {"scrape", "base_model", "datasets"}
    assert native_pinned == emulated_pinned


def test_seed_task_file_is_keyed_by_content(keys_of, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Add two numbers.", "input": "", "output": "a + b"}\n')
    use = lambda raw: raw["synthesize"]["self_instruct"].update(seed_tasks=str(seeds))  # noqa: E731
    before = keys_of(use)
    assert keys_of(use) == before
    seeds.write_text(
        seeds.read_text() + '{"instruction": "Sort a list.", "input": "", "output": "sorted(x)"}\n'
    )
    assert changed(before, keys_of(use)) == set(STAGES) - {"scrape", "base_model", "datasets"}


def test_a_dataset_file_is_keyed_by_content_and_reaches_clean_only_when_configured(keys_of, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text('{"instruction": "Add two numbers.", "output": "a + b"}\n')
    use = lambda raw: raw.update(datasets=[{"name": "mine", "files": [str(data)]}])  # noqa: E731
    without, before = keys_of(), keys_of(use)
    assert changed(without, before) == set(STAGES) - {"scrape", "base_model", "synthesize"}
    data.write_text(data.read_text() + '{"instruction": "Sort a list.", "output": "sorted(x)"}\n')
    assert changed(before, keys_of(use)) == set(STAGES) - {"scrape", "base_model", "synthesize"}


@pytest.mark.parametrize(
    ("library", "expected"),
    [
        ("trl", DOWNSTREAM_OF_TRAIN),
        ("mlflow", {"register"}),
        ("datasets", {"datasets", "tokenize", "train", "evaluate", "register"}),
        ("transformers", set(STAGES) - {"scrape", "datasets"}),
        ("numpy", set()),  # no stage declares it
    ],
)
def test_a_library_upgrade_changes_exactly_the_stages_that_use_it(
    keys_of, tmp_path, monkeypatch, library, expected
):
    base = keys_of()
    real = versions.importlib.metadata.version
    monkeypatch.setattr(
        versions.importlib.metadata, "version", lambda name: "99.0" if name == library else real(name)
    )
    assert changed(base, keys_of()) == expected


def test_scraped_package_content_is_in_the_scrape_key(keys_of, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "scrapeme"
    write(pkg, {"__init__.py": "", "core.py": 'def f():\n    """Doc."""\n'})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    use = lambda raw: raw["scrape"].update(package="scrapeme")  # noqa: E731
    before = keys_of(use)
    (pkg / "core.py").write_text('def f():\n    """Doc, edited."""\n')
    assert changed(before, keys_of(use)) == set(STAGES) - {"datasets"}  # tiny's scratch model reads it too
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\x00")
    after_edit = keys_of(use)
    (pkg / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\x01")  # bytecode is not source
    assert keys_of(use) == after_edit


def test_local_model_folder_is_keyed_by_content(keys_of, tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    use = lambda raw: raw["model"].update(source={"kind": "folder", "path": str(folder)})  # noqa: E731
    before = keys_of(use)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5 + 1e-9}))
    assert changed(before, keys_of(use)) == set(STAGES) - {"scrape", "datasets"}


def test_local_teacher_folder_is_keyed_by_content(keys_of, tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "teacher"
    shutil.copytree(tiny_model_dir, folder)
    use = lambda raw: raw["synthesize"]["teacher"].update(model=str(folder))  # noqa: E731
    before = keys_of(use)
    (folder / "generation_config.json").write_text('{"temperature": 0.5}')
    assert changed(before, keys_of(use)) == set(STAGES) - {"scrape", "base_model", "datasets"}
