"""One fake OpenAI-compatible (or Anthropic Messages) chat server for every test and benchmark that needs a
teacher on loopback: a ThreadingHTTPServer on 127.0.0.1 whose every answer comes from a callback.

    def respond(call: Call) -> Reply:
        if call.index == 0:
            return error_reply(503, "busy", {"Retry-After": "0"})
        return chat_reply(f"answer to {call.prompt}")

    with FakeChatServer(respond) as server:
        teacher = RemoteTeacher(TeacherConfig(backend="openai", base_url=server.url, ...))
        ...
        assert server.prompts() == [...]

The callback is the whole behaviour: failures, Retry-After, stalls (it may sleep), barriers, a fake clock
advanced per request, per-prompt answers. It runs on the request's own thread, so it may block; an exception
it raises comes back as a 500 (and is kept in `errors`), so a test sees a failed request, not a hang.
Tests get one from the `fake_chat` fixture (tests/conftest.py), which closes it after the test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class Headers(dict[str, str]):
    """Request headers with case-insensitive look-up (HTTP's rule): `h["authorization"]` and
    `h["Authorization"]` are the same entry; keys are stored lower-case."""

    def __init__(self, items: dict[str, str] | None = None) -> None:
        super().__init__({k.lower(): v for k, v in (items or {}).items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Call:
    """One request the server saw."""

    index: int  # 0-based order of arrival
    path: str
    headers: dict[str, str]  # a Headers: look-ups ignore case
    body: dict  # the parsed JSON body ({} when there was none)

    @property
    def prompt(self) -> str:
        """The first message's content, as OpenAI and Anthropic bodies both carry it (a string, or a list of
        content blocks whose text is joined)."""
        content = self.body["messages"][0]["content"]
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content)
        return content


Reply = dict | tuple[int, dict | bytes] | tuple[int, dict | bytes, dict[str, str]]


def chat_reply(text: str, usage: dict | None = None) -> dict:
    """An OpenAI chat.completions body answering `text` (with `usage` when given)."""
    reply: dict = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    if usage is not None:
        reply["usage"] = usage
    return reply


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> tuple:
    """An OpenAI-style error: (status, {"error": {"message": ...}}, headers)."""
    return status, {"error": {"message": message}}, dict(headers or {})


def _normalize(reply: Reply) -> tuple[int, dict | bytes, dict[str, str]]:
    if isinstance(reply, dict):
        return 200, reply, {}
    if len(reply) == 2:
        status, payload = reply
        return status, payload, {}
    status, payload, headers = reply
    return status, payload, headers


class FakeChatServer:
    """A loopback chat server answering every request with `respond(call)`; a context manager."""

    def __init__(self, respond: Callable[[Call], Reply]) -> None:
        self.respond = respond
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []  # what `respond` raised (each answered with a 500)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def prompts(self) -> list[str]:
        """The prompt of every request, in order of arrival."""
        with self._lock:
            return [call.prompt for call in self.calls]

    def _record(self, path: str, headers: dict[str, str], body: dict) -> Call:
        with self._lock:
            call = Call(len(self.calls), path, Headers(headers), body)
            self.calls.append(call)
        return call

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
            pass

        def do_POST(self) -> None:  # the http.server hook's name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            call = server._record(self.path, dict(self.headers), json.loads(raw) if raw else {})
            try:
                status, payload, headers = _normalize(server.respond(call))
            except Exception as exc:  # a broken callback (or a broken barrier): a failed request, not a hang
                with server._lock:
                    server.errors.append(exc)
                status, payload, headers = 500, {"error": {"message": f"fake server: {exc!r}"}}, {}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout under test): nobody is left to answer

        do_GET = do_POST

    return Handler
