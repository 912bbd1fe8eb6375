"""tasks.common.teacher.accounting through the OpenAI-compatible teacher: tokens counted from `usage`,
every prompt accounted for once, and the budget caps (max_requests, max_tokens, max_seconds on a fake clock)
stopping a run cleanly. The server is the fake chat server (tests/fake_chat.py); sleeps are injected."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from teacher_fakes import (
    FakeClock,
    answer,
    balanced,
    canned_completion,
    failing_first,
    openai_cfg,
    openai_teacher,
)

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher.remote import RemoteTeacher
from tests.fake_chat import Call


def test_openai_counts_tokens_from_usage(fake_chat, sleeps: list[float]) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    server = fake_chat(failing_first(1, then=lambda call: answer(call, usage)))
    teacher = openai_teacher(server.url, sleeps, max_concurrency=1)
    teacher.generate(["a", "b", "c"])
    stats = teacher.stats()
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (33, 21)
    assert (stats["prompts"], stats["produced"], stats["requests"], stats["retries"]) == (3, 3, 4, 1)
    assert stats["seconds"] >= 0 and stats["stopped"] is None and stats["caps"] == {}
    assert balanced(stats)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_openai_max_requests_stops_cleanly(fake_chat, sleeps: list[float], concurrency: int) -> None:
    server = fake_chat(answer)
    teacher = openai_teacher(server.url, sleeps, max_requests=4, max_concurrency=concurrency)
    out = teacher.generate([f"p{i}" for i in range(10)])
    assert len(server.calls) == 4 and sum(o is not None for o in out) == 4
    stats = teacher.stats()
    assert stats["stopped"] == "max_requests" and stats["skipped"] == 6 and stats["requests"] == 4
    assert stats["caps"] == {"max_requests": 4} and balanced(stats)
    if concurrency == 1:
        assert out[:4] == [canned_completion(f"p{i}") for i in range(4)] and out[4:] == [None] * 6
    assert teacher.generate(["later"]) == [None] and len(server.calls) == 4  # stays stopped


def test_openai_max_requests_exactly_enough_is_not_a_stop(fake_chat, sleeps: list[float]) -> None:
    teacher = openai_teacher(fake_chat(answer).url, sleeps, max_requests=3)
    assert None not in teacher.generate(["a", "b", "c"])
    assert teacher.stats()["stopped"] is None


def test_openai_retries_count_against_max_requests(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(failing_first(2))
    teacher = openai_teacher(server.url, sleeps, max_requests=3, max_concurrency=1)
    assert teacher.generate(["a", "b"]) == [canned_completion("a"), None]
    assert len(server.calls) == 3 and teacher.stats()["stopped"] == "max_requests"


def test_openai_max_tokens_stops_cleanly(fake_chat, sleeps: list[float]) -> None:
    server = fake_chat(lambda call: answer(call, {"prompt_tokens": 10, "completion_tokens": 20}))
    teacher = openai_teacher(server.url, sleeps, max_tokens=50, max_concurrency=1)
    out = teacher.generate(["a", "b", "c", "d"])
    assert out == [canned_completion("a"), canned_completion("b"), None, None]  # 30, 60 >= 50: stop
    stats = teacher.stats()
    assert stats["stopped"] == "max_tokens" and stats["prompt_tokens"] + stats["completion_tokens"] == 60


def test_openai_max_seconds_stops_cleanly(fake_chat, sleeps: list[float]) -> None:
    clock = FakeClock()

    def respond(call: Call) -> dict:
        clock.advance(2.0)  # each request takes 2 fake seconds
        return answer(call)

    server = fake_chat(respond)
    teacher = openai_teacher(server.url, sleeps, clock=clock, max_seconds=5, max_concurrency=1)
    out = teacher.generate([f"p{i}" for i in range(6)])
    assert out[:3] == [canned_completion(f"p{i}") for i in range(3)] and out[3:] == [None] * 3
    assert len(server.calls) == 3 and teacher.stats()["stopped"] == "max_seconds"


def test_openai_no_backoff_past_max_seconds(fake_chat) -> None:
    clock, waits = FakeClock(), []
    server = fake_chat(failing_first(100, retry_after="8"))

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    cfg = openai_cfg(server.url, max_seconds=10, max_concurrency=1)
    teacher = RemoteTeacher(cfg, sleep=sleep, clock=clock)
    assert teacher.generate(["a", "b"]) == [None, None]
    # waited 8 s once; the second 8 s wait would end past 10 s, so a gives up and b is never asked
    assert waits == [8.0] and len(server.calls) == 2
    stats = teacher.stats()
    assert (
        stats["stopped"] == "max_seconds" and stats["failures"] == {"http_503": 1} and stats["skipped"] == 1
    )


def test_teacher_config_rejects_bad_caps() -> None:
    for bad in ({"max_concurrency": 0}, {"max_requests": 0}, {"max_tokens": -1}, {"max_seconds": 0}):
        with pytest.raises(ValidationError):
            TeacherConfig(**bad)
    assert TeacherConfig().max_concurrency == 8 and TeacherConfig().cache is True
