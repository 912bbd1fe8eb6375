"""Tests for tasks.common.teacher: the OpenAI-compatible client against a real loopback server with fault
injection (500 forever, 429 with Retry-After in both forms, connection refused, slow responses, garbage
JSON, 4xx), its concurrency, accounting, budget caps and on-disk call cache; and the local transformers
teacher on the shared tiny scratch model from builders.py (no network, no model hub). Sleeps are injected,
so no test waits for a backoff."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import Teacher, TeacherError, make_teacher
from tasks.common.teacher.cache import CallCache
from tasks.common.teacher.local import LocalTeacher
from tasks.common.teacher.remote import RemoteTeacher, redact_url

# --------------------------------------------------------------------------------------------------------
# A fake OpenAI-compatible server
# --------------------------------------------------------------------------------------------------------


def canned_completion(prompt: str) -> str:
    """What the fake server answers: depends on the prompt, so a mix-up in ordering shows."""
    return f"answer to <{prompt.upper()[::-1]}>"


class FakeClock:
    """A monotonic clock the tests move: by the injected sleep, or by the server per request."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeServer:
    """Behaviour knobs and a record of every request the handler saw."""

    url: str = ""
    port: int = 0
    fail_first: int = 0  # the first N requests fail with fail_status
    fail_status: int = 503
    retry_after: str | Callable[[], str] | None = None  # sent with the failures when set
    delay_first: int = 0  # the first N requests stall for delay_s before answering
    delay_s: float = 0.0
    always_status: int | None = None  # every request fails with this status (400, 401, 500, ...)
    status_after: tuple[int, int] | None = None  # (n, status): requests after the first n fail with status
    fail_prompts: set[str] = field(default_factory=set)  # these prompts always get a 500
    garbage_prompts: set[str] = field(default_factory=set)  # these get a 200 with a body that is not JSON
    echo_auth: bool = False  # error messages quote the Authorization header (as careless servers do)
    usage: dict | None = None  # sent as the completion's `usage`
    barrier: threading.Barrier | None = None  # every request waits here: proves N are in flight together
    delay_for: Callable[[str], float] | None = None  # per-prompt stall
    clock: FakeClock | None = None  # advanced by clock_step per request: a budget in fake seconds
    clock_step: float = 0.0
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prompts_seen(self) -> list[str]:
        return [r["body"]["messages"][0]["content"] for r in self.requests]


def _make_handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, payload: dict | bytes, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            if state.echo_auth:
                message += f" (you sent Authorization: {self.headers.get('Authorization')})"
            self._send(status, {"error": {"message": message}}, headers)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                n = len(state.requests)
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if state.clock is not None:
                    state.clock.advance(state.clock_step)
            prompt = body["messages"][0]["content"]
            if self.path != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            if state.barrier is not None:
                state.barrier.wait()
            if n < state.delay_first:
                time.sleep(state.delay_s)
            if state.delay_for is not None:
                time.sleep(state.delay_for(prompt))
            if state.always_status is not None:
                return self._error(state.always_status, "max_tokens is too large for this model")
            if state.status_after is not None and n >= state.status_after[0]:
                return self._error(state.status_after[1], "quota exceeded for this key")
            if n < state.fail_first:
                after = state.retry_after() if callable(state.retry_after) else state.retry_after
                return self._error(state.fail_status, "busy", {"Retry-After": after} if after else {})
            if prompt in state.fail_prompts:
                return self._error(500, "internal error")
            if prompt in state.garbage_prompts:
                return self._send(200, b"<html>not json at all")
            reply = {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": canned_completion(prompt)}}
                ]
            }
            if state.usage is not None:
                reply["usage"] = state.usage
            self._send(200, reply)

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
    state.port = httpd.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}/v1"
    yield state


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture(autouse=True)
def no_teacher_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_TEACHER_KEY", raising=False)


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


def openai_teacher(
    base_url: str,
    sleeps: list[float],
    cache: CallCache | None = None,
    clock: Callable[[], float] = time.monotonic,
    **overrides: object,
) -> RemoteTeacher:
    return RemoteTeacher(openai_cfg(base_url, **overrides), cache=cache, sleep=sleeps.append, clock=clock)


def free_port() -> int:
    with socket.socket() as sock:  # grab a free port, then close it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def balanced(stats: dict) -> bool:
    """Every prompt is accounted for exactly once."""
    return stats["prompts"] == stats["cache_hits"] + stats["produced"] + stats["failed"] + stats["skipped"]


# --------------------------------------------------------------------------------------------------------
# RemoteTeacher: requests, order, key
# --------------------------------------------------------------------------------------------------------


def test_openai_completions_in_order(server: FakeServer, sleeps: list[float]) -> None:
    prompts = ["write a sort", "reverse a string", "", "parse json ünïcode"]
    teacher = openai_teacher(server.url, sleeps)
    out = teacher.generate(prompts)
    assert out == [canned_completion(p) for p in prompts]
    assert sorted(server.prompts_seen()) == sorted(prompts) and not sleeps
    first = next(r for r in server.requests if r["body"]["messages"][0]["content"] == "write a sort")
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "teacher-model",
        "messages": [{"role": "user", "content": "write a sort"}],
        "temperature": 0.3,
        "max_tokens": 64,
    }
    assert isinstance(teacher, Teacher)


def test_openai_trailing_slash_in_base_url(server: FakeServer, sleeps: list[float]) -> None:
    assert openai_teacher(server.url + "/", sleeps).generate(["x"]) == [canned_completion("x")]


def test_openai_sends_bearer_key_from_env(
    server: FakeServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-123")
    teacher = openai_teacher(server.url, sleeps)
    teacher.generate(["a", "b", "c"])
    assert {r["headers"]["Authorization"] for r in server.requests} == {"Bearer sk-test-123"}
    assert "sk-test-123" not in repr(teacher) and "sk-test-123" not in json.dumps(teacher.stats())


def test_openai_no_auth_header_without_env(server: FakeServer, sleeps: list[float]) -> None:
    openai_teacher(server.url, sleeps).generate(["a"])
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_requests_in_flight_and_order(server: FakeServer, sleeps: list[float]) -> None:
    # Every request waits at a barrier of 8: the run can only finish if 8 are in flight at once (one at a
    # time, the first request would break the barrier after its timeout and get a 500).
    server.barrier = threading.Barrier(8, timeout=10)
    prompts = [f"task {i}" for i in range(16)]
    server.delay_for = lambda p: 0.05 * (15 - int(p.split()[1])) % 0.4  # later prompts finish first
    teacher = openai_teacher(server.url, sleeps, max_concurrency=8, max_retries=0)
    assert teacher.generate(prompts) == [canned_completion(p) for p in prompts]
    assert len(server.requests) == 16 and teacher.stats()["failed"] == 0


def test_openai_one_in_flight_when_configured(server: FakeServer, sleeps: list[float]) -> None:
    server.barrier = threading.Barrier(2, timeout=1.0)  # two together would pass; one at a time cannot
    out = openai_teacher(server.url, sleeps, max_concurrency=1, max_retries=0).generate(["a", "b"])
    assert out == [None, None]


# --------------------------------------------------------------------------------------------------------
# Retries: backoff, Retry-After, what is never retried
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429, 500])
def test_openai_retries_then_succeeds(server: FakeServer, sleeps: list[float], status: int) -> None:
    server.fail_first, server.fail_status = 2, status
    teacher = openai_teacher(server.url, sleeps)
    assert teacher.generate(["retry me"]) == [canned_completion("retry me")]
    assert len(server.requests) == 3
    # jittered exponential backoff from 0.5 s: the n-th wait lies in [d, 2d], d = 0.5 * 2**(n-1)
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    stats = teacher.stats()
    assert (stats["requests"], stats["retries"], stats["produced"], stats["failed"]) == (3, 2, 1, 0)


def test_openai_backoff_is_jittered(server: FakeServer) -> None:
    runs = []
    for _ in range(2):
        server.requests.clear()
        server.fail_first = 5
        waits: list[float] = []
        openai_teacher(server.url, waits, max_retries=5).generate(["x"])
        assert all(d <= w <= 2 * d for w, d in zip(waits, [0.5, 1, 2, 4, 8], strict=True))
        runs.append(waits)
    assert runs[0] != runs[1]  # continuous uniform jitter: equal runs would mean no jitter at all


def test_openai_honours_retry_after_seconds_capped(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status, server.retry_after = 2, 429, "120"
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [30.0, 30.0]


def test_openai_honours_retry_after_seconds(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status, server.retry_after = 2, 429, "3"
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [3.0, 3.0]


def test_openai_honours_retry_after_http_date(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status = 1, 503
    server.retry_after = lambda: formatdate(time.time() + 20, usegmt=True)  # whole seconds, GMT
    assert openai_teacher(server.url, sleeps).generate(["x"]) == [canned_completion("x")]
    assert len(sleeps) == 1 and 17.0 <= sleeps[0] <= 20.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (formatdate(time.time() + 86400, usegmt=True), 30.0),  # a day away: capped
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # already past: retry at once
    ],
)
def test_openai_retry_after_http_date_bounds(
    server: FakeServer, sleeps: list[float], header: str, expected: float
) -> None:
    server.fail_first, server.fail_status, server.retry_after = 1, 429, header
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [expected]


def test_openai_unreadable_retry_after_falls_back_to_backoff(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first, server.fail_status, server.retry_after = 1, 503, "soon"
    openai_teacher(server.url, sleeps).generate(["x"])
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_openai_4xx_raises_at_once_with_server_text(
    server: FakeServer, sleeps: list[float], status: int
) -> None:
    server.always_status = status
    with pytest.raises(TeacherError, match=str(status)) as info:
        openai_teacher(server.url, sleeps, max_concurrency=1).generate(["x", "y", "z"])
    assert "max_tokens is too large for this model" in str(info.value)
    assert server.url + "/chat/completions" in str(info.value)
    assert not info.value.transient
    assert len(server.requests) == 1 and not sleeps  # neither retried nor followed by the other prompts


def test_openai_500_forever_gives_up_with_none(
    server: FakeServer, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_first, server.fail_status = 100, 503
    teacher = openai_teacher(server.url, sleeps, max_retries=2)
    with caplog.at_level(logging.WARNING, logger="tasks.common.teacher"):
        assert teacher.generate(["x"]) == [None]
    assert len(server.requests) == 2 + 1 and len(sleeps) == 2
    stats = teacher.stats()
    assert stats["failures"] == {"http_503": 1} and stats["failed"] == 1 and stats["stopped"] is None
    assert stats["requests"] == 3 and stats["retries"] == 2 and balanced(stats)
    giving_up = caplog.records[-1].getMessage()
    assert server.url + "/chat/completions" in giving_up and "503" in giving_up and "busy" in giving_up


def test_openai_failing_prompts_do_not_stop_the_others(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_prompts, server.garbage_prompts = {"broken"}, {"garbled"}
    prompts = ["a", "broken", "b", "garbled", "c"]
    teacher = openai_teacher(server.url, sleeps, max_retries=1)
    out = teacher.generate(prompts)
    assert out == [canned_completion("a"), None, canned_completion("b"), None, canned_completion("c")]
    stats = teacher.stats()
    assert stats["failures"] == {"bad_response": 1, "http_500": 1} and stats["produced"] == 3
    # a 500 is retried; a 200 carrying garbage is a broken server, not a busy one: asked once
    assert server.prompts_seen().count("broken") == 2 and server.prompts_seen().count("garbled") == 1


def test_openai_zero_retries_means_one_attempt(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first = 100
    assert openai_teacher(server.url, sleeps, max_retries=0).generate(["x"]) == [None]
    assert len(server.requests) == 1 and not sleeps


def test_openai_retries_timeouts(server: FakeServer, sleeps: list[float]) -> None:
    server.delay_first, server.delay_s = 1, 0.6
    teacher = openai_teacher(server.url, sleeps, timeout_s=0.2)
    assert teacher.generate(["slow"]) == [canned_completion("slow")]
    assert len(sleeps) == 1 and teacher.stats()["retries"] == 1


def test_openai_slower_than_timeout_forever(server: FakeServer, sleeps: list[float]) -> None:
    server.delay_first, server.delay_s = 100, 0.6
    teacher = openai_teacher(server.url, sleeps, timeout_s=0.2, max_retries=1)
    assert teacher.generate(["slow"]) == [None]
    assert teacher.stats()["failures"] == {"timeout": 1} and len(sleeps) == 1


def test_openai_connection_refused_exhausts_retries(sleeps: list[float]) -> None:
    teacher = openai_teacher(f"http://127.0.0.1:{free_port()}/v1", sleeps, max_retries=2)
    assert teacher.generate(["x", "y"]) == [None, None]
    stats = teacher.stats()
    assert stats["failures"] == {"connection": 2} and stats["requests"] == 6 and len(sleeps) == 4


def test_openai_invalid_url_is_a_configuration_error(sleeps: list[float]) -> None:
    with pytest.raises(TeacherError, match="InvalidURL|MissingSchema|InvalidSchema"):
        openai_teacher("ftp://127.0.0.1/v1", sleeps).generate(["x"])


# --------------------------------------------------------------------------------------------------------
# Secrets: the API key and a password in base_url
# --------------------------------------------------------------------------------------------------------


def test_openai_key_never_in_errors_or_logs(
    server: FakeServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-planted-key-7f3a9c"
    monkeypatch.setenv("TEST_TEACHER_KEY", key)
    server.echo_auth, server.fail_first, server.status_after = True, 2, (3, 401)
    teacher = openai_teacher(server.url, sleeps, max_concurrency=1, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherError) as info:
        teacher.generate(["a", "b", "c"])  # a: 503 then 503, given up; b: answered; c: 401 (key echoed)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {key}"  # it was sent, and echoed
    assert "401" in str(info.value) and "quota exceeded" in str(info.value)
    texts = [str(info.value), repr(teacher), json.dumps(teacher.stats()), caplog.text]
    assert caplog.records and not [t for t in texts if key in t]


def test_openai_url_password_never_in_errors_or_logs(
    server: FakeServer, sleeps: list[float], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    password = "pw-planted-91b2"
    url = f"http://bob:{password}@127.0.0.1:{server.port}/v1"
    server.echo_auth, server.fail_first, server.status_after = True, 2, (3, 401)
    cache = CallCache(tmp_path / "cache")
    teacher = openai_teacher(url, sleeps, cache=cache, max_concurrency=1, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherError) as info:
        teacher.generate(["a", "b", "c"])
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    assert server.requests[0]["headers"]["Authorization"] == f"Basic {basic}"  # sent as Basic auth
    refused = openai_teacher(f"http://bob:{password}@127.0.0.1:{free_port()}/v1", sleeps, max_retries=0)
    with caplog.at_level(logging.DEBUG):
        assert refused.generate(["x"]) == [None]
    stored = "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    texts = [str(info.value), repr(teacher), repr(refused), caplog.text, stored]
    assert caplog.records and not [t for t in texts if password in t or basic in t]
    assert "127.0.0.1" in str(info.value)  # still says where


def test_openai_key_and_url_password_together_is_a_configuration_error(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Authorization header: requests would send the URL's Basic auth and silently drop the key."""
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-planted-key-both")
    with pytest.raises(ValueError, match=r"teacher\.api_key_env") as info:
        openai_teacher("http://bob:pw-planted-both@127.0.0.1:1/v1", sleeps)
    assert "http://***@127.0.0.1:1/v1" in str(info.value)
    assert "pw-planted-both" not in str(info.value) and "sk-planted-key-both" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("https://u:p@api.example.com:8443/v1") == "https://***@api.example.com:8443/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://api.example.com/v1?api_key=abc") == "https://api.example.com/v1?***"


# --------------------------------------------------------------------------------------------------------
# Accounting and budget caps
# --------------------------------------------------------------------------------------------------------


def test_openai_counts_tokens_from_usage(server: FakeServer, sleeps: list[float]) -> None:
    server.usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    server.fail_first = 1
    teacher = openai_teacher(server.url, sleeps, max_concurrency=1)
    teacher.generate(["a", "b", "c"])
    stats = teacher.stats()
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (33, 21)
    assert (stats["prompts"], stats["produced"], stats["requests"], stats["retries"]) == (3, 3, 4, 1)
    assert stats["seconds"] >= 0 and stats["stopped"] is None and stats["caps"] == {}
    assert balanced(stats)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_openai_max_requests_stops_cleanly(server: FakeServer, sleeps: list[float], concurrency: int) -> None:
    teacher = openai_teacher(server.url, sleeps, max_requests=4, max_concurrency=concurrency)
    out = teacher.generate([f"p{i}" for i in range(10)])
    assert len(server.requests) == 4 and sum(o is not None for o in out) == 4
    stats = teacher.stats()
    assert stats["stopped"] == "max_requests" and stats["skipped"] == 6 and stats["requests"] == 4
    assert stats["caps"] == {"max_requests": 4} and balanced(stats)
    if concurrency == 1:
        assert out[:4] == [canned_completion(f"p{i}") for i in range(4)] and out[4:] == [None] * 6
    assert teacher.generate(["later"]) == [None] and len(server.requests) == 4  # stays stopped


def test_openai_max_requests_exactly_enough_is_not_a_stop(server: FakeServer, sleeps: list[float]) -> None:
    teacher = openai_teacher(server.url, sleeps, max_requests=3)
    assert None not in teacher.generate(["a", "b", "c"])
    assert teacher.stats()["stopped"] is None


def test_openai_retries_count_against_max_requests(server: FakeServer, sleeps: list[float]) -> None:
    server.fail_first = 2
    teacher = openai_teacher(server.url, sleeps, max_requests=3, max_concurrency=1)
    assert teacher.generate(["a", "b"]) == [canned_completion("a"), None]
    assert len(server.requests) == 3 and teacher.stats()["stopped"] == "max_requests"


def test_openai_max_tokens_stops_cleanly(server: FakeServer, sleeps: list[float]) -> None:
    server.usage = {"prompt_tokens": 10, "completion_tokens": 20}
    teacher = openai_teacher(server.url, sleeps, max_tokens=50, max_concurrency=1)
    out = teacher.generate(["a", "b", "c", "d"])
    assert out == [canned_completion("a"), canned_completion("b"), None, None]  # 30, 60 >= 50: stop
    stats = teacher.stats()
    assert stats["stopped"] == "max_tokens" and stats["prompt_tokens"] + stats["completion_tokens"] == 60


def test_openai_max_seconds_stops_cleanly(server: FakeServer, sleeps: list[float]) -> None:
    clock = FakeClock()
    server.clock, server.clock_step = clock, 2.0  # each request takes 2 fake seconds
    teacher = openai_teacher(server.url, sleeps, clock=clock, max_seconds=5, max_concurrency=1)
    out = teacher.generate([f"p{i}" for i in range(6)])
    assert out[:3] == [canned_completion(f"p{i}") for i in range(3)] and out[3:] == [None] * 3
    assert len(server.requests) == 3 and teacher.stats()["stopped"] == "max_seconds"


def test_openai_no_backoff_past_max_seconds(server: FakeServer) -> None:
    clock, waits = FakeClock(), []
    server.fail_first, server.retry_after = 100, "8"

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    cfg = openai_cfg(server.url, max_seconds=10, max_concurrency=1)
    teacher = RemoteTeacher(cfg, sleep=sleep, clock=clock)
    assert teacher.generate(["a", "b"]) == [None, None]
    # waited 8 s once; the second 8 s wait would end past 10 s, so a gives up and b is never asked
    assert waits == [8.0] and len(server.requests) == 2
    stats = teacher.stats()
    assert (
        stats["stopped"] == "max_seconds" and stats["failures"] == {"http_503": 1} and stats["skipped"] == 1
    )


def test_teacher_config_rejects_bad_caps() -> None:
    for bad in ({"max_concurrency": 0}, {"max_requests": 0}, {"max_tokens": -1}, {"max_seconds": 0}):
        with pytest.raises(ValidationError):
            TeacherConfig(**bad)
    assert TeacherConfig().max_concurrency == 8 and TeacherConfig().cache is True


# --------------------------------------------------------------------------------------------------------
# The on-disk call cache
# --------------------------------------------------------------------------------------------------------


def test_openai_rerun_makes_no_requests(server: FakeServer, sleeps: list[float], tmp_path: Path) -> None:
    prompts = [f"task {i}" for i in range(12)]
    cfg = openai_cfg(server.url)
    first = make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "teacher_cache")
    out = first.generate(prompts)
    assert len(server.requests) == 12 and CallCache(tmp_path / "teacher_cache").count() == 12
    server.requests.clear()
    again = make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "teacher_cache")
    assert again.generate(prompts) == out == [canned_completion(p) for p in prompts]
    assert server.requests == []
    stats = again.stats()
    assert stats["cache_hits"] == 12 and stats["requests"] == 0 and balanced(stats)


def test_openai_killed_halfway_rerun_asks_only_the_rest(
    server: FakeServer, sleeps: list[float], tmp_path: Path
) -> None:
    prompts = [f"task {i}" for i in range(10)]
    server.status_after = (4, 400)  # the 5th request fails with a configuration error: the stage dies
    with pytest.raises(TeacherError):
        openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=1).generate(prompts)
    assert server.prompts_seen() == prompts[:5]
    server.requests.clear()
    server.status_after = None
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=1).generate(prompts)
    assert out == [canned_completion(p) for p in prompts]
    assert server.prompts_seen() == prompts[4:]  # the four answered before the kill are not bought again


def test_openai_killed_with_requests_in_flight(
    server: FakeServer, sleeps: list[float], tmp_path: Path
) -> None:
    prompts = [f"task {i}" for i in range(24)]
    server.status_after = (10, 401)
    with pytest.raises(TeacherError):
        openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=4).generate(prompts)
    cached = CallCache(tmp_path).count()
    assert 0 < cached < 24
    server.requests.clear()
    server.status_after = None
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=4).generate(prompts)
    assert out == [canned_completion(p) for p in prompts] and len(server.requests) == 24 - cached


def test_openai_failures_are_not_cached(server: FakeServer, sleeps: list[float], tmp_path: Path) -> None:
    server.fail_prompts = {"b"}
    assert (
        openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_retries=0).generate(["a", "b"])[1]
        is None
    )
    server.requests.clear()
    server.fail_prompts = set()
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path)).generate(["a", "b"])
    assert out == [canned_completion("a"), canned_completion("b")] and server.prompts_seen() == ["b"]


@pytest.mark.parametrize(
    "change", [{"temperature": 0.9}, {"max_new_tokens": 32}, {"model": "other-model"}], ids=str
)
def test_openai_cache_key_holds_generation_params(
    server: FakeServer, sleeps: list[float], tmp_path: Path, change: dict
) -> None:
    openai_teacher(server.url, sleeps, cache=CallCache(tmp_path)).generate(["a"])
    openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), **change).generate(["a"])
    assert len(server.requests) == 2


def test_openai_repeated_prompt_is_a_new_sample_when_sampling(
    server: FakeServer, sleeps: list[float], tmp_path: Path
) -> None:
    teacher = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), temperature=0.8)
    teacher.generate(["same", "same"])
    teacher.generate(["same"])
    assert len(server.requests) == 3  # three samples asked for, three bought
    server.requests.clear()
    again = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), temperature=0.8)
    again.generate(["same", "same", "same"])
    assert server.requests == []  # ... and all three kept
    again.generate(["same"])
    assert len(server.requests) == 1  # a fourth sample is new


def test_make_teacher_cache_off(server: FakeServer, tmp_path: Path) -> None:
    cfg = openai_cfg(server.url, cache=False)
    make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "c").generate(["a"])
    make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "c").generate(["a"])
    assert len(server.requests) == 2 and not list(tmp_path.rglob("*.json"))


def test_call_cache_entries_are_whole_files(tmp_path: Path) -> None:
    cache = CallCache(tmp_path)
    cache.put("ab" + "0" * 62, {"text": "x"})
    assert cache.get("ab" + "0" * 62) == {"text": "x"} and cache.get("cd" + "0" * 62) is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ab" + "0" * 62 + ".json"]  # no temp left
    (tmp_path / "ab" / ("ab" + "1" * 62 + ".json")).write_text('{"text": "trunc')  # written by hand, torn
    assert cache.get("ab" + "1" * 62) is None


# --------------------------------------------------------------------------------------------------------
# LocalTeacher on a tiny model
# --------------------------------------------------------------------------------------------------------


def local_cfg(model_dir: Path, temperature: float, **overrides: object) -> TeacherConfig:
    fields = dict(backend="local", model=str(model_dir), temperature=temperature, max_new_tokens=12)
    return TeacherConfig(**(fields | overrides))


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


def test_local_one_completion_per_prompt(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.8), seed=0)
    assert isinstance(teacher, Teacher)
    out = teacher.generate(PROMPTS)
    assert len(out) == len(PROMPTS) and all(isinstance(t, str) for t in out)
    assert teacher.generate([]) == []
    for prompt, text in zip(PROMPTS, out, strict=True):
        assert not text.startswith(prompt)
        assert "<|pad|>" not in text and "<|endoftext|>" not in text


def test_local_greedy_is_deterministic(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    first = teacher.generate(PROMPTS)
    assert teacher.generate(PROMPTS) == first
    assert any(first)  # a random model still generates something for some prompt


def test_local_same_seed_same_samples(tiny_model_dir: Path) -> None:
    cfg = local_cfg(tiny_model_dir, 1.0)
    a = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    b = LocalTeacher(str(tiny_model_dir), cfg, seed=7).generate(PROMPTS)
    c = LocalTeacher(str(tiny_model_dir), cfg, seed=8).generate(PROMPTS)
    assert a == b
    assert a != c  # near-uniform logits over ~400 tokens: a different seed samples different text


def test_local_left_padding_matches_unbatched(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    batched = teacher.generate(PROMPTS[:4])
    alone = [teacher.generate([p])[0] for p in PROMPTS[:4]]
    assert batched == alone


def test_local_rejects_max_new_tokens_beyond_context(tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    max_positions = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    cfg = TeacherConfig(backend="local", model=str(tiny_model_dir), max_new_tokens=max_positions)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        LocalTeacher(str(tiny_model_dir), cfg).generate(["def f():"])


class CountingGenerate:
    """Wraps tasks.common.generation.generate as the local teacher calls it: counts prompts generated,
    and can fail on its n-th call (a kill in the middle of a stage)."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        from tasks.common.generation import generate

        self.real, self.fail_on_call = generate, fail_on_call
        self.calls: list[list[str]] = []

    def __call__(self, model, tokenizer, prompts, *args, **kwargs):
        self.calls.append(list(prompts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("killed mid-stage")
        return self.real(model, tokenizer, prompts, *args, **kwargs)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_local_cache_returns_what_an_uncached_run_produces(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, temperature: float
) -> None:
    cfg = local_cfg(tiny_model_dir, temperature)
    uncached = LocalTeacher(str(tiny_model_dir), cfg, seed=5)
    expected = [uncached.generate(PROMPTS), uncached.generate(PROMPTS[:3])]  # two calls: two seeds each

    # killed during the second batch of the first call: the first batch (8 prompts) is already on disk
    killer = CountingGenerate(fail_on_call=2)
    monkeypatch.setattr("tasks.common.teacher.local.generate", killer)
    with pytest.raises(KeyboardInterrupt):
        LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path)).generate(PROMPTS)
    assert CallCache(tmp_path).count() == 8

    counting = CountingGenerate()
    monkeypatch.setattr("tasks.common.teacher.local.generate", counting)
    resumed = LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path))
    assert [resumed.generate(PROMPTS), resumed.generate(PROMPTS[:3])] == expected
    assert counting.calls == [sorted(PROMPTS, key=len)[8:], sorted(PROMPTS[:3], key=len)]  # the rest
    assert resumed.stats()["cache_hits"] == 8 and resumed.stats()["produced"] == 4

    counting.calls.clear()
    again = LocalTeacher(str(tiny_model_dir), cfg, seed=5, cache=CallCache(tmp_path))
    assert [again.generate(PROMPTS), again.generate(PROMPTS[:3])] == expected
    assert counting.calls == [] and again.stats()["requests"] == 0 and again.stats()["cache_hits"] == 12


def test_local_cache_key_holds_the_seed_when_sampling(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = local_cfg(tiny_model_dir, 1.0)
    a = LocalTeacher(str(tiny_model_dir), cfg, seed=7, cache=CallCache(tmp_path)).generate(PROMPTS)
    b = LocalTeacher(str(tiny_model_dir), cfg, seed=8, cache=CallCache(tmp_path))
    assert b.generate(PROMPTS) != a and b.stats()["cache_hits"] == 0


def test_local_max_requests_stops_between_batches(tiny_model_dir: Path) -> None:
    teacher = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0, max_requests=8), seed=0)
    out = teacher.generate(PROMPTS)
    longest = max(range(len(PROMPTS)), key=lambda i: len(PROMPTS[i]))  # batches go by length
    assert [i for i, t in enumerate(out) if t is None] == [longest]
    stats = teacher.stats()
    assert stats["stopped"] == "max_requests" and stats["requests"] == 8 and stats["skipped"] == 1
    assert stats["prompt_tokens"] > 0 and 0 < stats["completion_tokens"] <= 8 * 12 and balanced(stats)


def test_local_max_seconds(tiny_model_dir: Path) -> None:
    clock = FakeClock()
    cfg = local_cfg(tiny_model_dir, 0.0, max_seconds=10)
    teacher = LocalTeacher(str(tiny_model_dir), cfg, seed=0, clock=clock)
    assert None not in teacher.generate(PROMPTS[:2])
    clock.advance(11)
    assert teacher.generate(PROMPTS[:2]) == [None, None] and teacher.stats()["stopped"] == "max_seconds"


# SmolLM2-Instruct's ChatML layout (shortened): what the default local teacher's tokenizer carries
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def chat_model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model, its tokenizer given a chat template (an instruct teacher in miniature)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "chat_model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return folder


def test_local_asks_an_instruct_teacher_through_its_chat_template(
    chat_model_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    prompts = PROMPTS[:3]
    counting = CountingGenerate()
    monkeypatch.setattr("tasks.common.teacher.local.generate", counting)
    cache = CallCache(tmp_path / "cache")

    chat = LocalTeacher(str(chat_model_dir), local_cfg(chat_model_dir, 0.0), seed=0, cache=cache)
    assert all(isinstance(text, str) for text in chat.generate(prompts))
    (seen,) = counting.calls
    assert sorted(seen) == sorted(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p.strip()}], add_generation_prompt=True, tokenize=False
        )
        for p in prompts
    )
    assert seen[0].startswith("<|im_start|>system\n") and seen[0].endswith("<|im_start|>assistant\n")
    assert chat.stop == ("<|im_end|>",)  # the assistant's turn ends there (this EOS is another token)

    # off by config, or a tokenizer without a template: the raw prompt, and the cache keeps them apart
    raw = LocalTeacher(
        str(chat_model_dir), local_cfg(chat_model_dir, 0.0, chat_template=False), seed=0, cache=cache
    )
    raw.generate(prompts)
    plain = LocalTeacher(str(tiny_model_dir), local_cfg(tiny_model_dir, 0.0), seed=0)
    plain.generate(prompts)
    assert [sorted(c) for c in counting.calls[1:]] == [sorted(prompts)] * 2
    assert raw.stats()["cache_hits"] == 0 and raw.stop == plain.stop == ()


# --------------------------------------------------------------------------------------------------------
# make_teacher
# --------------------------------------------------------------------------------------------------------


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
