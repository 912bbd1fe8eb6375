"""The teacher's dialects (tasks/common/teacher/dialects/), each spoken by the one transport (remote.py) to
the fake chat server (tests/fake_chat.py), its callback answering in that API's shapes; and the registry of
backends agrees with the schema and the README."""

from __future__ import annotations

import pytest

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import BACKENDS, TeacherError, dialects, is_remote
from tasks.common.teacher.remote import RemoteTeacher
from tests.conftest import docs_text
from tests.fake_chat import chat_reply


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


def test_anthropic_messages_are_sent_and_read_in_that_apis_shapes(fake_chat, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-1234")  # the dialect's own variable by default
    server = fake_chat(lambda call: message(f"def f(): return {call.prompt!r}"))
    teacher = anthropic(server.url)
    assert teacher.generate(["one", "two"]) == ["def f(): return 'one'", "def f(): return 'two'"]
    first = next(call for call in server.calls if call.prompt == "one")
    assert first.path == "/v1/messages"
    assert first.headers["x-api-key"] == "sk-ant-test-1234"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in first.headers
    assert first.body == {
        "model": "claude-test",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "one"}],
        "temperature": 1.0,  # this API's range is [0, 1]
    }
    stats = teacher.stats()
    assert (stats["produced"], stats["prompt_tokens"], stats["completion_tokens"]) == (2, 22, 14)
    assert "anthropic" in repr(teacher) and "sk-ant" not in repr(teacher)


def test_anthropic_errors_are_retried_or_raised_as_that_api_words_them(fake_chat, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-5678")
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    server = fake_chat(lambda call: (529, overloaded) if call.index == 0 else message("ok"))
    teacher = anthropic(server.url, max_retries=1)
    assert teacher.generate(["p"]) == ["ok"] and teacher.stats()["retries"] == 1  # 529: overloaded, retried
    bad = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad key sk-ant-secret-5678"},
    }
    refused = fake_chat(lambda call: (400, bad))
    with pytest.raises(TeacherError, match=r"HTTP 400: bad key \*\*\*") as info:
        anthropic(refused.url).generate(["p"])
    assert "sk-ant-secret-5678" not in str(info.value)  # the key, echoed by the server, is scrubbed


def test_a_reply_in_another_apis_shape_is_a_bad_response_not_a_crash(fake_chat):
    server = fake_chat(lambda call: chat_reply("hi"))
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
    readme = docs_text()
    table = readme.split("| `teacher.backend` |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    assert {row.split("`")[1] for row in table} == set(dialects.names())  # every dialect, nothing else
