"""The layers, kept by walking the imports (every import statement, lazy ones inside functions too): stage
code under tasks/ never reaches the orchestration (Prefect, the flows, MLflow run bookkeeping), so an edit
there re-keys no stage; the modules that may touch Prefect are leaves; no import circle. And the keys of the
real stages follow exactly that: an edit to orchestration or logging changes none, an edit to a shared
helper changes those of the stages that import it."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from flows.finetune import DAG
from tasks.common import versions
from tasks.common.versions import OUTSIDE_KEYS, code_version, dependency_files, module_name

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "tasks").rglob("*.py"))
LEAVES = {"tasks.common.runtime", "tasks.common.progress"}  # may import Prefect, lazily, and nothing of ours
MLFLOW_USERS = ("tasks.registration", "tasks.common.mlflow_store")  # registering a model is the stage's work


def imports(path: Path) -> set[str]:
    """Every module an import statement in `path` names (absolute; relative ones resolved)."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            # `from pkg import submodule` reaches the submodule; a module's own packages are already importing
            submodules = {f"{base}.{a.name}" for a in node.names if versions.module_file(f"{base}.{a.name}")}
            found |= submodules or {base}
    return {name for name in found if not module.startswith(name + ".")}


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_stage_code_does_not_import_the_orchestration(path: Path):
    module, named = module_name(path), imports(path)
    assert "flows" not in {top(n) for n in named}, f"{module} imports the flows"
    if module in LEAVES:
        ours = {n for n in named if top(n) in ("tasks", "flows", "pipeline_config")}
        assert not ours, f"{module} must stay a leaf (it is outside every key), but imports {ours}"
        return
    assert not {n for n in named if top(n) in ("prefect", "prefect_dask")}, f"{module} imports Prefect"
    if not module.startswith(MLFLOW_USERS):
        assert "mlflow" not in {top(n) for n in named}, f"{module} imports MLflow"


def test_the_modules_left_out_of_keys_are_the_leaves():
    assert OUTSIDE_KEYS == LEAVES


def test_no_import_circle_under_tasks():
    graph = {module_name(p): {n for n in imports(p) if versions.module_file(n)} for p in SOURCES}
    graph = {m: {n for n in deps if n in graph and n != m} for m, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                pytest.fail("import circle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's code, which versions reads instead of the real tree."""
    for folder in ("tasks", "flows"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(versions, "REPO_ROOT", tmp_path)
    return tmp_path


def stage_versions() -> dict[str, str]:
    return {m.SPEC.name: code_version(m.SPEC.package) for m, _ in DAG}


@pytest.mark.parametrize(
    "edited",
    ["flows/tracking.py", "flows/stage_tasks.py", "flows/runner.py", "tasks/common/runtime.py",
     "tasks/common/progress.py"],
)  # fmt: skip
def test_editing_orchestration_or_logging_changes_no_stage_key(tree: Path, edited: str):
    before = stage_versions()
    (tree / edited).write_text((tree / edited).read_text() + "\n# edited\n")
    assert stage_versions() == before


def test_editing_a_shared_helper_changes_the_keys_of_its_users_only(tree: Path):
    before = stage_versions()
    users = {
        m.SPEC.name for m, _ in DAG if tree / "tasks/common/models.py" in dependency_files(m.SPEC.package)
    }
    (tree / "tasks/common/models.py").write_text(
        (tree / "tasks/common/models.py").read_text() + "\n# edited\n"
    )
    after = stage_versions()
    assert {s for s in before if before[s] != after[s]} == users and "scrape" not in users
