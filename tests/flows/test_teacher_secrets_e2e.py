"""The teacher's secrets never reach an output. The flow runs the tiny profile's scrape and synthesize
(`--only`) with the OpenAI-compatible teacher pointed at the fake chat server (tests/fake_chat.py), with an
API key planted in the environment variable the config names, twice: with a password in `base_url`
(requests then sends Basic auth made from it; the config names an unset key variable, since a key beside
URL credentials is a configuration error) and without (the key goes as a Bearer token). The server echoes
the Authorization header it got in an error (as careless servers do). Then every file of the workspace, of
the MLflow store (database and artifacts), of Prefect's result store and database, and the captured output
and log records are searched for the key, the password and the Basic-auth header made from it."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from pathlib import Path

import mlflow
import pytest

from flows.cli import main
from tests.conftest import SESSION_DIR
from tests.fake_chat import Call, FakeChatServer, Reply, chat_reply, error_reply

pytestmark = pytest.mark.slow

KEY_ENV = "E2E_TEACHER_KEY"
KEY = "sk-planted-e2e-4b8f1c93"
USER, PASSWORD = "bob", "pw-planted-e2e-77d0a2"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (KEY, PASSWORD, BASIC)

TASK = (
    " Merge two sorted lists into one sorted list without using sort.\nInput: a = [1, 3], b = [2]\n"
    "Solution:\n```python\ndef merge(a, b):\n    out = []\n    while a and b:\n"
    "        out.append((a if a[0] < b[0] else b).pop(0))\n    return out + a + b\n```\n"
    "Tests:\n```python\nassert merge([1, 3], [2]) == [1, 2, 3]\n```\n"
)


def scripted_teacher(call: Call) -> Reply:
    """The first request of every run (of 4: 3 prompts and a retry) gets a 503 whose message quotes the
    Authorization header (retried, so it is logged), the others a task."""
    if call.index % 4 == 0:
        return error_reply(503, f"busy (you sent {call.headers.get('Authorization')})", {"Retry-After": "0"})
    return chat_reply(TASK)


@pytest.fixture
def teacher(fake_chat) -> FakeChatServer:
    return fake_chat(scripted_teacher)


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data]


def prefect_database() -> Path | None:
    """The test harness's Prefect database (the flow's and tasks' run logs, parameters, states)."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    return Path(url.split(":///", 1)[1]) if url.startswith("sqlite") and ":///" in url else None


def test_teacher_key_and_url_password_appear_in_no_output(
    prefect_server, tiny_profile, teacher, tmp_path, monkeypatch, capfd, caplog
):
    monkeypatch.setenv(KEY_ENV, KEY)
    with_password = f"http://{USER}:{PASSWORD}@127.0.0.1:{teacher.port}/v1"
    runs, outs, errs, logged = [], [], [], []
    for base_url in (with_password, f"http://127.0.0.1:{teacher.port}/v1"):

        def edit(raw: dict, base_url: str = base_url) -> None:
            raw["synthesize"]["self_instruct"] = {
                "num_rounds": 1,
                "prompts_per_round": 3,
                "examples_per_prompt": 2,
            }
            raw["synthesize"]["verify"] = {"timeout_s": 20}
            raw["synthesize"]["teacher"] = {
                "backend": "openai",
                "model": "served-model",
                "base_url": base_url,
                "api_key_env": KEY_ENV if base_url != with_password else "E2E_TEACHER_KEY_UNSET",
                "max_retries": 2,
                "timeout_s": 10,
                "max_concurrency": 1,
            }

        config = tiny_profile(edit)
        # Prefect's logging set-up replaces the root's handlers (caplog's among them) and its console
        # handler writes to the stderr it was bound to, maybe an earlier test's: listen on our loggers and
        # Prefect's own
        run_log = io.StringIO()
        listener = logging.StreamHandler(run_log)
        listened = [logging.getLogger(name) for name in ("tasks", "flows", "prefect")]
        for logger in listened:
            logger.addHandler(listener)
        try:
            with caplog.at_level(logging.DEBUG):
                code = main(["run", "--config", str(config), "--only", "scrape", "synthesize", "--json"])
        finally:
            for logger in listened:
                logger.removeHandler(listener)
        out, err = capfd.readouterr()
        assert code == 0, err[-3000:]
        runs.append(json.loads(out))
        outs.append(out)
        errs.append(err)
        logged.append(caplog.text + run_log.getvalue())
        caplog.clear()

    # the secrets were really in play: sent (a URL password as Basic auth, the key as a Bearer token), echoed
    # by the server, and the teacher's retry warning logged
    sent = [call.headers.get("Authorization", "") for call in teacher.calls]
    assert sent == [f"Basic {BASIC}"] * 4 + [f"Bearer {KEY}"] * 4
    assert "teacher request to http://***@127.0.0.1" in logged[0] and "you sent Basic ***" in logged[0]
    assert "you sent Bearer ***" in logged[1]
    assert [s["stages"]["scrape"]["status"] for s in runs] == ["executed", "cached"]
    for summary in runs:
        assert list(summary["stages"]) == ["scrape", "synthesize"]
        report = json.loads((Path(summary["stages"]["synthesize"]["path"]) / "report.json").read_text())
        assert (report["teacher"]["produced"], report["teacher"]["retries"]) == (3, 1)

    # what MLflow shows of the config: the URL, redacted
    params = mlflow.MlflowClient().get_run(runs[0]["mlflow"]["run_id"]).data.params
    redacted = f"http://***@127.0.0.1:{teacher.port}/v1"
    assert params["synthesize.teacher.base_url"] == redacted
    key_env = mlflow.MlflowClient().get_run(runs[1]["mlflow"]["run_id"]).data.params
    assert key_env["synthesize.teacher.api_key_env"] == KEY_ENV

    workspace = tmp_path / "ws"
    mlflow_db = Path(os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    mlflow_artifacts = Path(os.environ["FINETUNE_MLFLOW_ARTIFACTS"].removeprefix("file://"))
    stores = files_under(workspace, mlflow_artifacts, SESSION_DIR / "prefect")
    stores += list(mlflow_db.parent.glob(mlflow_db.name + "*"))  # the database and its journal
    database = prefect_database()
    assert database is not None and database.is_file()
    prefect_files = list(database.parent.glob(database.name + "*"))
    stores += prefect_files
    # the search reaches what was written: the teacher cache, the log files, the MLflow params, the flow runs
    assert len(list((workspace / "teacher_cache").rglob("*.json"))) == 6
    assert len(list((workspace / "runs").glob("*/summary.json"))) == 2 and list(workspace.glob("logs/*.log"))
    assert redacted.encode() in mlflow_db.read_bytes()
    assert runs[1]["prefect_flow_run_id"].encode() in b"".join(p.read_bytes() for p in prefect_files)
    found = {str(p): leaks(p.read_bytes()) for p in stores}
    assert {p: s for p, s in found.items() if s} == {}
    texts = {"stdout": "".join(outs), "stderr": "".join(errs), "log records": "".join(logged)}
    assert {name: leaks(text.encode()) for name, text in texts.items() if leaks(text.encode())} == {}
