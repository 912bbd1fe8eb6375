"""Test session set-up: everything stateful (Prefect home and results, MLflow store, workspace) goes under
one temporary folder, and one Prefect test server serves the whole session (each costs ~11 s to start)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SESSION_DIR = Path(tempfile.mkdtemp(prefix="finetune-tests-"))
os.environ.update(
    PREFECT_HOME=str(SESSION_DIR / "prefect"),
    PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(SESSION_DIR / "prefect" / "results"),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_LOGGING_LEVEL="WARNING",
    MLFLOW_TRACKING_URI=f"sqlite:///{SESSION_DIR / 'mlflow.db'}",
    FINETUNE_MLFLOW_ARTIFACTS=(SESSION_DIR / "mlflow-artifacts").as_uri(),
    FINETUNE_WORKSPACE=str(SESSION_DIR / "workspace"),
    FINETUNE_CACHE=str(SESSION_DIR / "cache"),  # a remote workspace's local cache (tasks/common/io.py)
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    HF_DATASETS_CACHE=str(SESSION_DIR / "hf-datasets"),  # what `datasets` builds from local files
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    MLFLOW_ENABLE_ASYNC_LOGGING="false",
)

REPO = Path(__file__).resolve().parent.parent


def docs_text() -> str:
    """The README and the docs/ pages it links, as one text: where the tables the registries are checked
    against live."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n\n".join(page.read_text() for page in pages)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def tiny_profile(tmp_path):
    """make(edit=None) -> a copy of pipeline_config/tiny.yaml with its workspace under tmp_path, after
    `edit(raw_dict)`; each call rewrites the same file."""
    import yaml

    def make(edit=None) -> Path:
        raw = yaml.safe_load((REPO / "pipeline_config" / "tiny.yaml").read_text())
        raw["workspace"] = str(tmp_path / "ws")
        if edit:
            edit(raw)
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


@pytest.fixture(scope="session", autouse=True)
def _cleanup_session_dir():
    yield
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture
def fake_chat():
    """fake_chat(respond) -> a started FakeChatServer (tests/fake_chat.py) answering with `respond`; every
    server a test starts is closed after it."""
    from contextlib import ExitStack

    from tests.fake_chat import FakeChatServer

    with ExitStack() as servers:
        yield lambda respond: servers.enter_context(FakeChatServer(respond))


@pytest.fixture
def tracking_server(tmp_path):
    """`make tracking-server` (mlflow/server.sh) on a free loopback port over the store folder
    tmp_path/"store" (its mlflow.db and artifacts/): (url, store folder); stopped after the test."""
    import subprocess
    import time

    import requests

    from tests.flows.helpers import free_port

    port, store = free_port(), tmp_path / "store"
    env = {**os.environ, "PORT": str(port), "MLFLOW_STORE": str(store)}
    process = subprocess.Popen(
        [str(REPO / "mlflow" / "server.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        pytest.fail("the tracking server did not answer /health within 120 s")
    yield url, store
    os.killpg(process.pid, 15)
    process.wait(timeout=30)
