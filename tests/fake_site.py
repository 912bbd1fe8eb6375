"""One loopback web server for the tests that crawl or fetch over HTTP (tests/tasks/test_scrape_web.py,
tests/tasks/common/test_http.py): a ThreadingHTTPServer on 127.0.0.1 whose `routes` map a path to
(status, body, headers) or to a callback on the request's handler, and which keeps every hit.

    with sites() as start:
        site = start({"/index.html": static("<html>...</html>"), "/down": (503, b"down")})
        ...
        assert site.paths() == ["/index.html"]

Tests get `start` from the `serve` fixture (tests/tasks/conftest.py), which shuts every site down after
the test; a module-scoped fixture uses `sites()` itself. Nothing beyond the machine is reached."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class Site:
    """A loopback web server: `routes` maps a path to (status, headers, body) or a callable on the handler."""

    routes: dict[str, object] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    netloc: str = ""

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]


def static(body: str, kind: str = "text/html") -> Callable:
    """A page with an ETag and Last-Modified that answers a matching conditional request with 304."""
    data = body.encode()
    etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def serve(handler: BaseHTTPRequestHandler) -> int:
        validators = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
        # RFC 9110: If-None-Match, when sent, decides; If-Modified-Since counts only without it
        if handler.headers.get("If-None-Match", handler.headers.get("If-Modified-Since")) in (
            etag,
            LAST_MODIFIED,
        ):
            return send(handler, 304, b"", validators)
        return send(handler, 200, data, {"Content-Type": kind, **validators})

    return serve


def send(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None
) -> int:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    if "Content-Length" not in (headers or {}):
        handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if data:
        handler.wfile.write(data)
    return status


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # http.server's naming
            hit = Hit(time.monotonic(), self.path, dict(self.headers))
            with site.lock:
                site.hits.append(hit)
            route = site.routes.get(self.path)
            if route is None:
                hit.status = send(self, 404, b"not found", {"Content-Type": "text/plain"})
            else:
                hit.status = route(self) if callable(route) else send(self, *route)

    return Handler


@contextlib.contextmanager
def sites() -> Iterator[Callable[[dict], Site]]:
    """Start loopback sites, each served from its own thread; all shut down on exit."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict) -> Site:
        site = Site(routes=dict(routes))
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(site))
        server.daemon_threads, server.block_on_close = True, False  # a sleeping route must not hold teardown
        threading.Thread(target=server.serve_forever, daemon=True).start()
        site.netloc = f"127.0.0.1:{server.server_port}"
        site.url = f"http://{site.netloc}"
        servers.append(server)
        return site

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
