"""What the teacher tests share: the answer the fake chat server (tests/fake_chat.py) gives, callbacks for
the failures they inject, a fake clock, and the OpenAI-compatible teacher they build."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher.cache import CallCache
from tasks.common.teacher.remote import RemoteTeacher
from tests.fake_chat import Call, Reply, chat_reply, error_reply


def canned_completion(prompt: str) -> str:
    """What the fake server answers: depends on the prompt, so a mix-up in ordering shows."""
    return f"answer to <{prompt.upper()[::-1]}>"


def answer(call: Call, usage: dict | None = None) -> Reply:
    return chat_reply(canned_completion(call.prompt), usage)


def failing_first(
    n: int, status: int = 503, retry_after: str | None = None, then: Callable[[Call], Reply] = answer
) -> Callable[[Call], Reply]:
    """The first n requests fail with `status` ("busy", and Retry-After when given); `then` answers the
    rest."""

    def respond(call: Call) -> Reply:
        if call.index < n:
            return error_reply(status, "busy", {"Retry-After": retry_after} if retry_after else None)
        return then(call)

    return respond


def careless(call: Call) -> Reply:
    """A server that quotes the Authorization header in its errors: requests 1 and 2 get a 503, 3 is
    answered, the rest a 401."""
    echoed = f" (you sent Authorization: {call.headers.get('Authorization')})"
    if call.index >= 3:
        return error_reply(401, "quota exceeded for this key" + echoed)
    return error_reply(503, "busy" + echoed) if call.index < 2 else answer(call)


class FakeClock:
    """A monotonic clock the tests move: by the injected sleep, or by the server per request."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


def local_cfg(model_dir: Path, temperature: float, **overrides: object) -> TeacherConfig:
    fields = dict(backend="local", model=str(model_dir), temperature=temperature, max_new_tokens=12)
    return TeacherConfig(**(fields | overrides))


def free_port() -> int:
    with socket.socket() as sock:  # grab a free port, then close it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def balanced(stats: dict) -> bool:
    """Every prompt is accounted for exactly once."""
    return stats["prompts"] == stats["cache_hits"] + stats["produced"] + stats["failed"] + stats["skipped"]
