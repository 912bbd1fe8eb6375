"""The shared HTTP client's own behaviour (tasks/common/http.py), against a loopback site (tests/fake_site.py)
or no server at all: Retry-After read and capped, jittered bounded backoff, the allowed-hosts rule, the
per-host rate limiter and a dead server retried then raised. The crawler's use of it (robots.txt,
redirects hop by hop, the revalidating cache) is tested in tests/tasks/test_scrape_web.py."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tasks.common.http import HostRateLimiter, HttpClient, HttpSettings, host_allowed, retry_after_s
from tests.fake_site import send


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)

    def response(value: str | None) -> requests.Response:
        resp = requests.Response()
        if value is not None:
            resp.headers["Retry-After"] = value
        return resp

    assert retry_after_s(response("7"), now) == 7.0
    assert retry_after_s(response("Wed, 21 Oct 2026 07:28:30 GMT"), now) == 30.0
    assert retry_after_s(response("Wed, 21 Oct 2015 07:28:00 GMT"), now) == 0.0  # already past
    assert retry_after_s(response("soon"), now) is None
    assert retry_after_s(response(None), now) is None


def test_retry_after_is_honoured_and_capped(serve) -> None:
    calls = {"n": 0}

    def limited(handler: BaseHTTPRequestHandler) -> int:
        calls["n"] += 1
        if calls["n"] < 3:
            return send(handler, 429, b"slow down", {"Retry-After": "120" if calls["n"] == 1 else "2"})
        return send(handler, 200, b"ok")

    site = serve({"/api": limited})
    sleeps: list[float] = []
    client = HttpClient(HttpSettings(user_agent="t", retries=3, max_backoff_s=5.0), sleep=sleeps.append)
    assert client.get(f"{site.url}/api").text == "ok"
    assert sleeps == [5.0, 2.0]  # the server's 120 s capped by max_backoff_s, then its 2 s
    assert client.stats.retries == 2


def test_backoff_is_jittered_and_bounded(serve) -> None:
    site = serve({"/down": (503, b"down")})
    sleeps: list[float] = []
    settings = HttpSettings(user_agent="t", retries=6, backoff_s=1.0, max_backoff_s=3.0)
    resp = HttpClient(settings, sleep=sleeps.append).get(f"{site.url}/down")
    assert resp.status_code == 503  # out of retries: the last answer is the caller's to judge
    assert len(sleeps) == 6 and all(0 <= s <= 3.0 for s in sleeps)
    assert len(set(sleeps)) > 1  # full jitter: not a fixed ladder


def test_host_allowed_by_name_or_host_and_port() -> None:
    assert host_allowed("http://docs.example.org:8080/x", ("docs.example.org",))
    assert host_allowed("http://127.0.0.1:8000/x", ("127.0.0.1:8000",))
    assert not host_allowed("http://127.0.0.1:8001/x", ("127.0.0.1:8000",))
    assert not host_allowed("http://evil.example.org/x", ("docs.example.org",))
    assert host_allowed("http://anything/x", ())


def test_rate_limiter_is_per_host_and_takes_the_longer_delay() -> None:
    clock = {"t": 0.0}
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(round(s, 3))
        clock["t"] += s

    limiter = HostRateLimiter(2.0, sleep=sleep, clock=lambda: clock["t"])
    limiter.wait("a")
    limiter.wait("b")  # another host: no wait
    limiter.wait("a")
    assert sleeps == [0.505]
    limiter.set_delay("a", 3.0)  # counted from the latest request to "a"
    limiter.wait("a")
    limiter.wait("a")
    assert sleeps == [0.505, 3.005, 3.005]


def test_a_dead_server_is_retried_then_raised() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpClient(HttpSettings(user_agent="t", retries=1, backoff_s=0.0), sleep=lambda s: None)
    with pytest.raises(requests.ConnectionError):
        client.get(f"http://127.0.0.1:{port}/")
    assert client.stats.retries == 1
