"""Tests for tasks.teacher: the OpenAI-compatible client against a real loopback server, and the local
transformers teacher on the shared tiny scratch model from helpers.py (no network, no model hub)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import Teacher, TeacherError, make_teacher
from tasks.common.teacher.local import LocalTeacher
from tasks.common.teacher.openai import OpenAITeacher

# --------------------------------------------------------------------------------------------------------
# A fake OpenAI-compatible server
# --------------------------------------------------------------------------------------------------------


def canned_completion(prompt: str) -> str:
    """What the fake server answers: depends on the prompt, so a mix-up in ordering shows."""
    return f"answer to <{prompt.upper()[::-1]}>"


@dataclass
class FakeServer:
    """Behaviour knobs and a record of every request the handler saw."""

    url: str = ""
    fail_first: int = 0  # the first N requests fail with fail_status
    fail_status: int = 503
    retry_after: str | None = None  # sent with the failures when set
    delay_first: int = 0  # the first N requests stall for delay_s before answering
    delay_s: float = 0.0
    always_400: bool = False
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                n = len(state.requests)
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if n < state.delay_first:
                time.sleep(state.delay_s)
            if state.always_400:
                return self._send(400, {"error": {"message": "max_tokens is too large for this model"}})
            if n < state.fail_first:
                extra = {"Retry-After": state.retry_after} if state.retry_after else {}
                return self._send(state.fail_status, {"error": {"message": "busy"}}, extra)
            prompt = body["messages"][0]["content"]
            self._send(
                200,
                {
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": canned_completion(prompt)}}
                    ]
                },
            )

    return Handler


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    request.addfinalizer(stop)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state


@pytest.fixture
def sleeps() -> list[float]:
    return []


def openai_cfg(base_url: str, **overrides: object) -> TeacherConfig:
    fields = dict(
        backend="openai",
        model="teacher-model",
        base_url=base_url,
        api_key_env="TEST_TEACHER_KEY",
        temperature=0.3,
        max_new_tokens=64,
        timeout_s=5.0,
        max_retries=3,
    )
    fields.update(overrides)
    return TeacherConfig(**fields)


def openai_teacher(base_url: str, sleeps: list[float], **overrides: object) -> OpenAITeacher:
    return OpenAITeacher(openai_cfg(base_url, **overrides), sleep=sleeps.append)


# --------------------------------------------------------------------------------------------------------
# OpenAITeacher
# --------------------------------------------------------------------------------------------------------


def test_openai_completions_in_order(
    server: FakeServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    prompts = ["write a sort", "reverse a string", "", "parse json ünïcode"]
    out = openai_teacher(server.url, sleeps).generate(prompts)
    assert out == [canned_completion(p) for p in prompts]
    assert len(server.requests) == len(prompts) and not sleeps
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "teacher-model",
        "messages": [{"role": "user", "content": "write a sort"}],
        "temperature": 0.3,
        "max_tokens": 64,
    }


def test_openai_trailing_slash_in_base_url(server: FakeServer, sleeps: list[float]) -> None:
    assert openai_teacher(server.url + "/", sleeps).generate(["x"]) == [canned_completion("x")]


def test_openai_sends_bearer_key_from_env(
    server: FakeServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-123")
    teacher = openai_teacher(server.url, sleeps)
    teacher.generate(["a"])
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(teacher)


def test_openai_no_auth_header_without_env(
    server: FakeServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)
    openai_teacher(server.url, sleeps).generate(["a"])
    assert "Authorization" not in server.requests[0]["headers"]


@pytest.mark.parametrize("status", [503, 429, 500])
def test_openai_retries_then_succeeds(server: FakeServer, sleeps: list[float], status: int) -> None:
    server.fail_first, server.fail_status = 2, status
    assert openai_teacher(server.url, sleeps).generate(["retry me"]) == [canned_completion("retry me")]
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff from 0.5 s


def test_openai_honours_retry_after_capped(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status, server.retry_after = 2, 429, "120"
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [30.0, 30.0]


def test_openai_ignores_non_numeric_retry_after(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status = 1, 503
    server.retry_after = "Wed, 21 Oct 2015 07:28:00 GMT"
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [0.5]


def test_openai_400_raises_at_once_with_server_text(server: FakeServer, sleeps: list[float]) -> None:
    server.always_400 = True
    with pytest.raises(TeacherError, match="400") as info:
        openai_teacher(server.url, sleeps).generate(["x"])
    assert "max_tokens is too large for this model" in str(info.value)
    assert len(server.requests) == 1 and not sleeps


def test_openai_gives_up_after_max_retries(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status = 100, 503
    with pytest.raises(TeacherError) as info:
        openai_teacher(server.url, sleeps, max_retries=2).generate(["x"])
    message = str(info.value)
    assert server.url + "/chat/completions" in message and "503" in message and "busy" in message
    assert len(server.requests) == 2 + 1
    assert sleeps == [0.5, 1.0]


def test_openai_zero_retries_means_one_attempt(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first = 100
    with pytest.raises(TeacherError):
        openai_teacher(server.url, sleeps, max_retries=0).generate(["x"])
    assert len(server.requests) == 1 and not sleeps


def test_openai_retries_timeouts(server: FakeServer, sleeps: list[float]) -> None:
    server.delay_first, server.delay_s = 1, 0.6
    out = openai_teacher(server.url, sleeps, timeout_s=0.2).generate(["slow"])
    assert out == [canned_completion("slow")]
    assert len(sleeps) == 1


def test_openai_connection_refused_exhausts_retries(sleeps: list[float]) -> None:
    with socket.socket() as sock:  # grab a free port, then close it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(TeacherError, match="ConnectionError") as info:
        openai_teacher(url, sleeps, max_retries=2).generate(["x"])
    assert f"{url}/chat/completions" in str(info.value)
    assert sleeps == [0.5, 1.0]


# --------------------------------------------------------------------------------------------------------
# LocalTeacher on a tiny model
# --------------------------------------------------------------------------------------------------------


def local_cfg(model_dir: Path, temperature: float) -> TeacherConfig:
    return TeacherConfig(backend="local", model=str(model_dir), temperature=temperature, max_new_tokens=12)


PROMPTS = [
    "def add(a, b):",
    "Write a function that returns the mean of a list.\n",
    "class Counter:\n    def __init__(self):",
    "import json\n",
    "x",
    "def fizzbuzz(n):\n    for i in range(1, n + 1):",
    "def load(path):",
    "# flatten nested lists\n",
    "return a + b",  # nine prompts: more than one batch of 8
]


def test_local_one_completion_per_prompt(tiny_model_dir: Path) -> None:  # noqa: F811
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.8), seed=0)
    assert isinstance(teacher, Teacher)
    out = teacher.generate(PROMPTS)
    assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
    assert teacher.generate([]) == []
    for prompt, text in zip(PROMPTS, out, strict=True):
        assert not text.startswith(prompt)
        assert "<|pad|>" not in text and "<|endoftext|>" not in text


def test_local_greedy_is_deterministic(tiny_model_dir: Path) -> None:  # noqa: F811
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    first = teacher.generate(PROMPTS)
    assert teacher.generate(PROMPTS) == first
    assert any(first)  # a random model still generates something for some prompt


def test_local_same_seed_same_samples(tiny_model_dir: Path) -> None:  # noqa: F811
    cfg = local_cfg(tiny_model_dir, 1.0)
    a = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    b = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    c = LocalTeacher(str(tiny_model_dir), cfg, seed=8).generate(PROMPTS)
    assert a == b
    assert a != c  # near-uniform logits over ~400 tokens: a different seed samples different text


def test_local_left_padding_matches_unbatched(tiny_model_dir: Path) -> None:  # noqa: F811
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    batched = teacher.generate(PROMPTS[:4])
    alone = [teacher.generate([p])[0] for p in PROMPTS[:4]]
    assert batched == alone


def test_local_rejects_max_new_tokens_beyond_context(tiny_model_dir: Path) -> None:  # noqa: F811
    from transformers import AutoConfig

    max_positions = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    cfg = TeacherConfig(backend="local", model=str(tiny_model_dir), max_new_tokens=max_positions)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        LocalTeacher(str(tiny_model_dir), cfg).generate(["def f():"])


# --------------------------------------------------------------------------------------------------------
# make_teacher
# --------------------------------------------------------------------------------------------------------


def test_make_teacher_base_without_path_raises() -> None:
    with pytest.raises(ValueError, match="base"):
        make_teacher(TeacherConfig(backend="local", model="base"), None, seed=0)


def test_make_teacher_openai() -> None:
    teacher = make_teacher(openai_cfg("http://127.0.0.1:9/v1"), None, seed=0)
    assert isinstance(teacher, OpenAITeacher) and isinstance(teacher, Teacher)


def test_make_teacher_local_base_and_folder(tiny_model_dir: Path) -> None:  # noqa: F811
    cfg = TeacherConfig(backend="local", model="base", max_new_tokens=8)
    base = make_teacher(cfg, str(tiny_model_dir), seed=3)
    assert isinstance(base, LocalTeacher) and base.seed == 3
    folder = make_teacher(local_cfg(tiny_model_dir, 0.0), None, seed=0)
    assert isinstance(folder, LocalTeacher)
