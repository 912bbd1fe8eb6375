"""tasks.common.teacher.cache: the on-disk call cache, through the OpenAI-compatible teacher and the fake
chat server (tests/fake_chat.py): a rerun buys nothing, a run killed half-way (one request at a time or
several in flight) buys only the rest on its rerun, failures are not kept, the key holds what changes a
reply, and entries are whole files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from teacher_fakes import answer, balanced, canned_completion, openai_cfg, openai_teacher

from tasks.common.teacher import TeacherError, make_teacher
from tasks.common.teacher.cache import CallCache
from tests.fake_chat import Call, error_reply


def test_openai_rerun_makes_no_requests(fake_chat, tmp_path: Path) -> None:
    server = fake_chat(answer)
    prompts = [f"task {i}" for i in range(12)]
    cfg = openai_cfg(server.url)
    first = make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "teacher_cache")
    out = first.generate(prompts)
    assert len(server.calls) == 12 and CallCache(tmp_path / "teacher_cache").count() == 12
    again = make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "teacher_cache")
    assert again.generate(prompts) == out == [canned_completion(p) for p in prompts]
    assert len(server.calls) == 12
    stats = again.stats()
    assert stats["cache_hits"] == 12 and stats["requests"] == 0 and balanced(stats)


def test_openai_killed_halfway_rerun_asks_only_the_rest(
    fake_chat, sleeps: list[float], tmp_path: Path
) -> None:
    prompts = [f"task {i}" for i in range(10)]
    # the 5th request fails with a configuration error: the stage dies; the rerun's requests are answered
    server = fake_chat(lambda call: error_reply(400, "quota exceeded") if call.index == 4 else answer(call))
    with pytest.raises(TeacherError):
        openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=1).generate(prompts)
    assert server.prompts() == prompts[:5]
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=1).generate(prompts)
    assert out == [canned_completion(p) for p in prompts]
    assert server.prompts()[5:] == prompts[4:]  # the four answered before the kill are not bought again


def test_openai_killed_with_requests_in_flight(fake_chat, sleeps: list[float], tmp_path: Path) -> None:
    prompts = [f"task {i}" for i in range(24)]
    revoked = threading.Event()  # while set, requests after the 10th are refused: the key was revoked
    revoked.set()

    def respond(call: Call) -> object:
        return error_reply(401, "key revoked") if revoked.is_set() and call.index >= 10 else answer(call)

    server = fake_chat(respond)
    with pytest.raises(TeacherError):
        openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=4).generate(prompts)
    cached = CallCache(tmp_path).count()
    assert 0 < cached < 24
    asked = len(server.calls)
    revoked.clear()
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_concurrency=4).generate(prompts)
    assert out == [canned_completion(p) for p in prompts] and len(server.calls) - asked == 24 - cached


def test_openai_failures_are_not_cached(fake_chat, sleeps: list[float], tmp_path: Path) -> None:
    failing = {"b"}
    server = fake_chat(
        lambda call: error_reply(500, "internal error") if call.prompt in failing else answer(call)
    )
    teacher = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), max_retries=0)
    assert teacher.generate(["a", "b"])[1] is None
    asked = len(server.calls)
    failing.clear()
    out = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path)).generate(["a", "b"])
    assert out == [canned_completion("a"), canned_completion("b")] and server.prompts()[asked:] == ["b"]


@pytest.mark.parametrize(
    "change", [{"temperature": 0.9}, {"max_new_tokens": 32}, {"model": "other-model"}], ids=str
)
def test_openai_cache_key_holds_generation_params(
    fake_chat, sleeps: list[float], tmp_path: Path, change: dict
) -> None:
    server = fake_chat(answer)
    openai_teacher(server.url, sleeps, cache=CallCache(tmp_path)).generate(["a"])
    openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), **change).generate(["a"])
    assert len(server.calls) == 2


def test_openai_repeated_prompt_is_a_new_sample_when_sampling(
    fake_chat, sleeps: list[float], tmp_path: Path
) -> None:
    server = fake_chat(answer)
    teacher = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), temperature=0.8)
    teacher.generate(["same", "same"])
    teacher.generate(["same"])
    assert len(server.calls) == 3  # three samples asked for, three bought
    again = openai_teacher(server.url, sleeps, cache=CallCache(tmp_path), temperature=0.8)
    again.generate(["same", "same", "same"])
    assert len(server.calls) == 3  # ... and all three kept
    again.generate(["same"])
    assert len(server.calls) == 4  # a fourth sample is new


def test_make_teacher_cache_off(fake_chat, tmp_path: Path) -> None:
    server = fake_chat(answer)
    cfg = openai_cfg(server.url, cache=False)
    make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "c").generate(["a"])
    make_teacher(cfg, None, seed=0, cache_dir=tmp_path / "c").generate(["a"])
    assert len(server.calls) == 2 and not list(tmp_path.rglob("*.json"))


def test_call_cache_entries_are_whole_files(tmp_path: Path) -> None:
    cache = CallCache(tmp_path)
    cache.put("ab" + "0" * 62, {"text": "x"})
    assert cache.get("ab" + "0" * 62) == {"text": "x"} and cache.get("cd" + "0" * 62) is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["ab" + "0" * 62 + ".json"]  # no temp left
    (tmp_path / "ab" / ("ab" + "1" * 62 + ".json")).write_text('{"text": "trunc')  # written by hand, torn
    assert cache.get("ab" + "1" * 62) is None
