"""The teacher's dialects (tasks/common/teacher/dialects/), each spoken by the one transport (remote.py) to a
loopback server that answers in that API's shapes; and the registry of backends agrees with the schema and
the README."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import BACKENDS, TeacherError, dialects, is_remote
from tasks.common.teacher.remote import RemoteTeacher
from tests.conftest import REPO

Respond = Callable[[str, dict, dict], tuple[int, dict]]  # (path, headers, body) -> (status, JSON reply)


@dataclass
class Loopback:
    """A loopback HTTP server answering every POST with `respond`; the requests it got, in order."""

    respond: Respond
    requests: list[tuple[str, dict, dict]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def loopback() -> Iterator[Callable[[Respond], Loopback]]:
    servers = []

    def start(respond: Respond) -> Loopback:
        server = Loopback(respond)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server hook's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append((self.path, headers, body))
                status, reply = server.respond(self.path, headers, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        server.url = f"http://127.0.0.1:{httpd.server_port}/v1"
        return server

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def message(text: str, input_tokens: int = 11, output_tokens: int = 7) -> dict:
    """A Messages API reply: content blocks, usage in input/output tokens."""
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic(url: str, **overrides) -> RemoteTeacher:
    fields = dict(backend="anthropic", model="claude-test", base_url=url, temperature=1.5, max_new_tokens=64)
    return RemoteTeacher(TeacherConfig(**(fields | overrides)), sleep=lambda s: None)


def test_anthropic_messages_are_sent_and_read_in_that_apis_shapes(loopback, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-1234")  # the dialect's own variable by default
    server = loopback(
        lambda path, headers, body: (200, message(f"def f(): return {body['messages'][0]['content']!r}"))
    )
    teacher = anthropic(server.url)
    assert teacher.generate(["one", "two"]) == ["def f(): return 'one'", "def f(): return 'two'"]
    path, headers, body = server.requests[0]
    assert path == "/v1/messages"
    assert headers["x-api-key"] == "sk-ant-test-1234" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert body == {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "one"}],
        "temperature": 1.0,  # this API's range is [0, 1]
    }
    stats = teacher.stats()
    assert (stats["produced"], stats["prompt_tokens"], stats["completion_tokens"]) == (2, 22, 14)
    assert "anthropic" in repr(teacher) and "sk-ant" not in repr(teacher)


def test_anthropic_errors_are_retried_or_raised_as_that_api_words_them(loopback, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-5678")
    calls = iter([(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})])
    server = loopback(lambda path, headers, body: next(calls, (200, message("ok"))))
    teacher = anthropic(server.url, max_retries=1)
    assert teacher.generate(["p"]) == ["ok"] and teacher.stats()["retries"] == 1  # 529: overloaded, retried
    bad = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad key sk-ant-secret-5678"},
    }
    refused = loopback(lambda path, headers, body: (400, bad))
    with pytest.raises(TeacherError, match=r"HTTP 400: bad key \*\*\*") as info:
        anthropic(refused.url).generate(["p"])
    assert "sk-ant-secret-5678" not in str(info.value)  # the key, echoed by the server, is scrubbed


def test_a_reply_in_another_apis_shape_is_a_bad_response_not_a_crash(loopback):
    openai_shaped = {"choices": [{"message": {"content": "hi"}}]}
    server = loopback(lambda path, headers, body: (200, openai_shaped))
    teacher = anthropic(server.url, max_retries=0)
    assert teacher.generate(["p"]) == [None] and teacher.stats()["failures"] == {"bad_response": 1}


def test_the_registry_the_schema_and_the_readme_agree():
    assert set(dialects.names()) == {"anthropic", "openai"}  # the modules of dialects/
    assert BACKENDS == ("local", *dialects.names())
    for backend in BACKENDS:
        TeacherConfig(backend=backend, base_url=None if backend == "local" else "http://127.0.0.1:9/v1")
        assert is_remote(backend) == (backend != "local")
    with pytest.raises(ValueError, match="'local', 'anthropic' or 'openai'"):
        TeacherConfig(backend="nosuch")
    with pytest.raises(ValueError, match="teacher.backend 'anthropic' needs teacher.base_url"):
        TeacherConfig(backend="anthropic")
    readme = (REPO / "README.md").read_text()
    table = readme.split("| `teacher.backend` |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert {row.split("`")[1] for row in table} == set(dialects.names())  # every dialect, nothing else
