"""tests/fake_chat.py, the shared fake chat server: what a client sends is recorded as a Call, what the
callback returns is what the client gets (status, body, headers), and a callback that raises is a 500."""

from __future__ import annotations

import threading

import pytest
import requests

from tests.fake_chat import Call, FakeChatServer, chat_reply, error_reply


def post(url: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(url + "/chat/completions", json=body, headers=headers, timeout=10)


def chat(prompt: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}]}


def test_calls_are_recorded_and_replies_are_what_the_callback_returns() -> None:
    def respond(call: Call) -> object:
        if call.index == 0:
            return error_reply(429, "slow down", {"Retry-After": "7"})
        if call.prompt == "garbage":
            return 200, b"<html>not json"
        return chat_reply(f"echo {call.prompt}", usage={"prompt_tokens": 3, "completion_tokens": 2})

    with FakeChatServer(respond) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        first = post(server.url, chat("one"), Authorization="Bearer sk-x")
        second = post(server.url, chat("two"))
        third = post(server.url, chat("garbage"))

    assert (first.status_code, first.json(), first.headers["Retry-After"]) == (
        429,
        {"error": {"message": "slow down"}},
        "7",
    )
    assert second.status_code == 200
    assert second.json()["choices"][0]["message"] == {"role": "assistant", "content": "echo two"}
    assert second.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert (third.status_code, third.content) == (200, b"<html>not json")

    assert server.prompts() == ["one", "two", "garbage"]
    assert [c.index for c in server.calls] == [0, 1, 2]
    call = server.calls[0]
    assert call.path == "/v1/chat/completions" and call.body == chat("one")
    # header look-ups ignore case, as HTTP does
    assert call.headers["Authorization"] == call.headers["authorization"] == "Bearer sk-x"
    assert "AUTHORIZATION" in call.headers and "authorization" not in server.calls[1].headers
    assert server.errors == []


def test_prompt_reads_anthropic_bodies_and_content_blocks() -> None:
    plain = Call(0, "/v1/messages", {}, {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    blocky = Call(1, "/v1/messages", {}, {"messages": [{"role": "user", "content": blocks}]})
    assert (plain.prompt, blocky.prompt) == ("hi", "ab")


def test_a_callback_that_raises_is_a_500_and_is_kept() -> None:
    def respond(call: Call) -> dict:
        raise RuntimeError("scripted bug")

    with FakeChatServer(respond) as server:
        reply = post(server.url, chat("x"))
    assert reply.status_code == 500 and "scripted bug" in reply.json()["error"]["message"]
    assert [str(e) for e in server.errors] == ["scripted bug"]


def test_requests_are_served_concurrently(fake_chat) -> None:
    # each request waits at a barrier of 3: only three handled at once get past it
    barrier = threading.Barrier(3, timeout=10)

    def respond(call: Call) -> dict:
        barrier.wait()
        return chat_reply(call.prompt)

    server = fake_chat(respond)
    replies: list[int] = []
    threads = [
        threading.Thread(target=lambda p=p: replies.append(post(server.url, chat(p)).status_code))
        for p in "abc"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [200, 200, 200] and sorted(server.prompts()) == ["a", "b", "c"]


def test_a_closed_server_refuses_connections() -> None:
    with FakeChatServer(lambda call: chat_reply("ok")) as server:
        assert post(server.url, chat("x")).json()["choices"][0]["message"]["content"] == "ok"
    with pytest.raises(requests.ConnectionError):
        post(server.url, chat("y"))
