"""tasks.common.teacher.remote: the OpenAI-compatible client against the fake chat server
(tests/fake_chat.py), each test's callback injecting its fault: 5xx and 429 with Retry-After in both forms,
4xx, connection refused, slow responses, garbage JSON, a server echoing the Authorization header. Also its
concurrency and its keeping the key and a URL password out of every error and log. Sleeps are injected, so
no test waits for a backoff."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from teacher_fakes import (
    answer,
    balanced,
    canned_completion,
    careless,
    failing_first,
    free_port,
    openai_teacher,
)

from tasks.common.teacher import Teacher, TeacherError
from tasks.common.teacher.cache import CallCache
from tasks.common.teacher.remote import redact_url
from tests.fake_chat import Call, error_reply

# --------------------------------------------------------------------------------------------------------
# Requests, order, key
# --------------------------------------------------------------------------------------------------------


def test_openai_completions_in_order(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(answer)
    prompts = ["write a sort", "reverse a string", "", "parse json ünïcode"]
    teacher = openai_teacher(server.url, sleeps)
    out = teacher.generate(prompts)
    assert out == [canned_completion(p) for p in prompts]
    assert sorted(server.prompts()) == sorted(prompts) and not sleeps
    first = next(c for c in server.calls if c.prompt == "write a sort")
    assert first.path == "/v1/chat/completions"
    assert first.body == {
        "model": "teacher-model",
        "messages": [{"role": "user", "content": "write a sort"}],
        "temperature": 0.3,
        "max_tokens": 64,
    }
    assert isinstance(teacher, Teacher)


def test_openai_trailing_slash_in_base_url(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(answer)
    assert openai_teacher(server.url + "/", sleeps).generate(["x"]) == [canned_completion("x")]


def test_openai_sends_bearer_key_from_env(
    fake_chat, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_chat(answer)
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test-123")
    teacher = openai_teacher(server.url, sleeps)
    teacher.generate(["a", "b", "c"])
    assert {c.headers["Authorization"] for c in server.calls} == {"Bearer sk-test-123"}
    assert "sk-test-123" not in repr(teacher) and "sk-test-123" not in json.dumps(teacher.stats())


def test_openai_no_auth_header_without_env(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(answer)
    openai_teacher(server.url, sleeps).generate(["a"])
    assert "Authorization" not in server.calls[0].headers


def test_openai_requests_in_flight_and_order(fake_chat, sleeps: list[float]) -> None:
    # Every request waits at a barrier of 8: the run can only finish if 8 are in flight at once (one at a
    # time, the first request would break the barrier after its timeout and get a 500).
    barrier = threading.Barrier(8, timeout=10)

    def respond(call: Call) -> dict:
        barrier.wait()
        time.sleep(0.05 * (15 - int(call.prompt.split()[1])) % 0.4)  # later prompts finish first
        return answer(call)

    server = fake_chat(respond)
    prompts = [f"task {i}" for i in range(16)]
    teacher = openai_teacher(server.url, sleeps, max_concurrency=8, max_retries=0)
    assert teacher.generate(prompts) == [canned_completion(p) for p in prompts]
    assert len(server.calls) == 16 and teacher.stats()["failed"] == 0


def test_openai_one_in_flight_when_configured(fake_chat, sleeps: list[float]) -> None:
    barrier = threading.Barrier(2, timeout=1.0)  # two together would pass; one at a time cannot

    def respond(call: Call) -> dict:
        barrier.wait()
        return answer(call)

    server = fake_chat(respond)
    out = openai_teacher(server.url, sleeps, max_concurrency=1, max_retries=0).generate(["a", "b"])
    assert out == [None, None]
    assert [type(e) for e in server.errors] == [threading.BrokenBarrierError] * 2


# --------------------------------------------------------------------------------------------------------
# Retries: backoff, Retry-After, what is never retried
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429, 500])
def test_openai_retries_then_succeeds(fake_chat, sleeps: list[float], status: int) -> None:
    server = fake_chat(failing_first(2, status))
    teacher = openai_teacher(server.url, sleeps)
    assert teacher.generate(["retry me"]) == [canned_completion("retry me")]
    assert len(server.calls) == 3
    # jittered exponential backoff from 0.5 s: the n-th wait lies in [d, 2d], d = 0.5 * 2**(n-1)
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    stats = teacher.stats()
    assert (stats["requests"], stats["retries"], stats["produced"], stats["failed"]) == (3, 2, 1, 0)


def test_openai_backoff_is_jittered(fake_chat) -> None:
    runs = []
    for _ in range(2):
        server = fake_chat(failing_first(5))
        waits: list[float] = []
        openai_teacher(server.url, waits, max_retries=5).generate(["x"])
        assert all(d <= w <= 2 * d for w, d in zip(waits, [0.5, 1, 2, 4, 8], strict=True))
        runs.append(waits)
    assert runs[0] != runs[1]  # continuous uniform jitter: equal runs would mean no jitter at all


@pytest.mark.parametrize(
    ("header", "expected"), [("120", [30.0, 30.0]), ("3", [3.0, 3.0])], ids=["capped", "3s"]
)
def test_openai_honours_retry_after_seconds(
    fake_chat, sleeps: list[float], header: str, expected: list
) -> None:
    server = fake_chat(failing_first(2, 429, retry_after=header))
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == expected


def test_openai_honours_retry_after_http_date(fake_chat, sleeps: list[float]) -> None:
    def respond(call: Call) -> object:
        if call.index == 0:  # whole seconds, GMT, 20 s from the moment the server answers
            return error_reply(503, "busy", {"Retry-After": formatdate(time.time() + 20, usegmt=True)})
        return answer(call)

    server = fake_chat(respond)
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
    fake_chat, sleeps: list[float], header: str, expected: float
) -> None:
    server = fake_chat(failing_first(1, 429, retry_after=header))
    openai_teacher(server.url, sleeps).generate(["x"])
    assert sleeps == [expected]


def test_openai_unreadable_retry_after_falls_back_to_backoff(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(failing_first(1, 503, retry_after="soon"))
    openai_teacher(server.url, sleeps).generate(["x"])
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_openai_4xx_raises_at_once_with_server_text(fake_chat, sleeps: list[float], status: int) -> None:
    server = fake_chat(lambda call: error_reply(status, "max_tokens is too large for this model"))
    with pytest.raises(TeacherError, match=str(status)) as info:
        openai_teacher(server.url, sleeps, max_concurrency=1).generate(["x", "y", "z"])
    assert "max_tokens is too large for this model" in str(info.value)
    assert server.url + "/chat/completions" in str(info.value)
    assert not info.value.transient
    assert len(server.calls) == 1 and not sleeps  # neither retried nor followed by the other prompts


def test_openai_500_forever_gives_up_with_none(
    fake_chat, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_chat(failing_first(100, 503))
    teacher = openai_teacher(server.url, sleeps, max_retries=2)
    with caplog.at_level(logging.WARNING, logger="tasks.common.teacher"):
        assert teacher.generate(["x"]) == [None]
    assert len(server.calls) == 2 + 1 and len(sleeps) == 2
    stats = teacher.stats()
    assert stats["failures"] == {"http_503": 1} and stats["failed"] == 1 and stats["stopped"] is None
    assert stats["requests"] == 3 and stats["retries"] == 2 and balanced(stats)
    giving_up = caplog.records[-1].getMessage()
    assert server.url + "/chat/completions" in giving_up and "503" in giving_up and "busy" in giving_up


def test_openai_failing_prompts_do_not_stop_the_others(fake_chat, sleeps: list[float]) -> None:
    def respond(call: Call) -> object:
        if call.prompt == "broken":
            return error_reply(500, "internal error")
        if call.prompt == "garbled":
            return 200, b"<html>not json at all"
        return answer(call)

    server = fake_chat(respond)
    prompts = ["a", "broken", "b", "garbled", "c"]
    teacher = openai_teacher(server.url, sleeps, max_retries=1)
    out = teacher.generate(prompts)
    assert out == [canned_completion("a"), None, canned_completion("b"), None, canned_completion("c")]
    stats = teacher.stats()
    assert stats["failures"] == {"bad_response": 1, "http_500": 1} and stats["produced"] == 3
    # a 500 is retried; a 200 carrying garbage is a broken server, not a busy one: asked once
    assert server.prompts().count("broken") == 2 and server.prompts().count("garbled") == 1


def test_openai_zero_retries_means_one_attempt(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(failing_first(100))
    assert openai_teacher(server.url, sleeps, max_retries=0).generate(["x"]) == [None]
    assert len(server.calls) == 1 and not sleeps


# The stall is far longer than the client's timeout, so neither test hangs on how busy the machine is; a
# stalled handler is a daemon thread, and nobody waits for it.
STALL_S, TIMEOUT_S = 5.0, 1.0


def test_openai_retries_timeouts(fake_chat, sleeps: list[float]) -> None:
    def respond(call: Call) -> dict:
        if call.index == 0:
            time.sleep(STALL_S)
        return answer(call)

    server = fake_chat(respond)
    teacher = openai_teacher(server.url, sleeps, timeout_s=TIMEOUT_S)
    assert teacher.generate(["slow"]) == [canned_completion("slow")]
    assert len(sleeps) == 1 and teacher.stats()["retries"] == 1


def test_openai_slower_than_timeout_forever(fake_chat, sleeps: list[float]) -> None:
    def respond(call: Call) -> dict:
        time.sleep(STALL_S)
        return answer(call)

    server = fake_chat(respond)
    teacher = openai_teacher(server.url, sleeps, timeout_s=TIMEOUT_S, max_retries=1)
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
    fake_chat, sleeps: list[float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-planted-key-7f3a9c"
    monkeypatch.setenv("TEST_TEACHER_KEY", key)
    server = fake_chat(careless)
    teacher = openai_teacher(server.url, sleeps, max_concurrency=1, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherError) as info:
        teacher.generate(["a", "b", "c"])  # a: 503 then 503, given up; b: answered; c: 401 (key echoed)
    assert server.calls[0].headers["Authorization"] == f"Bearer {key}"  # it was sent, and echoed
    assert "401" in str(info.value) and "quota exceeded" in str(info.value)
    texts = [str(info.value), repr(teacher), json.dumps(teacher.stats()), caplog.text]
    assert caplog.records and not [t for t in texts if key in t]


def test_openai_url_password_never_in_errors_or_logs(
    fake_chat, sleeps: list[float], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    password = "pw-planted-91b2"
    server = fake_chat(careless)
    url = f"http://bob:{password}@127.0.0.1:{server.port}/v1"
    cache = CallCache(tmp_path / "cache")
    teacher = openai_teacher(url, sleeps, cache=cache, max_concurrency=1, max_retries=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherError) as info:
        teacher.generate(["a", "b", "c"])
    basic = base64.b64encode(f"bob:{password}".encode()).decode()
    assert server.calls[0].headers["Authorization"] == f"Basic {basic}"  # sent as Basic auth
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
