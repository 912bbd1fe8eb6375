"""The scrape stage: an installed package through the stage contract, and the web crawler's politeness.

Run alone: `python -m benchmarks.run scrape_sklearn scrape_web_rate`.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import in_fresh_process, time_runs, timed

# One scrape stage build in a new process, so that nothing is memoised (file hashes, the code version):
# what a new `finetune run` computes again
_SCRAPE_CHILD = """
import json, sys, time
import tasks.scrape as scrape
from pipeline_config import load_config
from tasks.common.stage import read_report
cfg = load_config("pipeline_config/offline.yaml").model_copy(update={"workspace": sys.argv[1]})
start = time.perf_counter()
out = scrape.SPEC.build(cfg, {})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "status": out.status, "records": out.rows_out,
                  "report": read_report(out)}))
"""


@benchmark("scrape_sklearn")
def scrape_sklearn() -> dict:
    """The scrape stage on the whole installed scikit-learn through the stage contract (key, build,
    publish) in a fresh workspace, cold (value, seconds; goal <= 15 s on 2 cores), then the same config
    again: a warm re-run is a cache hit whose stage time is the key (hashing the package's files anew) and
    the lookup (goal < 1 s). Each in a new process, timed around the stage alone. ratio = cold / warm."""
    with tempfile.TemporaryDirectory() as tmp:
        build = partial(in_fresh_process, _SCRAPE_CHILD, tmp)
        runs = time_runs({"cold": build, "warm": build}, repeats=1, warmup=0)  # cold first, once each
    cold, warm = runs["cold"], runs["warm"]
    report = cold.result["report"]
    return {
        "value": round(cold.median, 2),
        "unit": "s",
        "ratio": round(cold.median / warm.median, 1),
        "detail": {
            "cold_s": round(cold.median, 2),
            "warm_s": round(warm.median, 3),
            "warm_status": warm.result["status"],
            "files_seen": report["files"]["seen"],
            "files_parsed": report["files"]["parsed"],
            "records": cold.result["records"],
            "with_doctests": report["definitions"]["with_doctests"],
            "cpus": os.cpu_count(),
            "ratio_means": "cold / warm (cache hit: key + lookup) stage time (higher is better)",
        },
    }


def _site(modules: int, arrivals: list[float]) -> ThreadingHTTPServer:
    """A loopback web site (robots.txt, an index linking `modules` Python files) noting each request's
    arrival time; not a chat API, so not the shared fake chat server."""
    pages = {"/robots.txt": b"User-agent: *\nAllow: /\n"}
    pages["/index.html"] = "".join(f'<a href="/m{i}.py">m{i}</a>' for i in range(modules)).encode()
    pages.update({f"/m{i}.py": f'def f{i}():\n    """Doc {i}."""\n'.encode() for i in range(modules)})

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            arrivals.append(time.monotonic())
            body = pages.get(self.path, b"")
            kind = "text/x-python" if self.path.endswith(".py") else "text/plain"
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html" if self.path.endswith(".html") else kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@benchmark("scrape_web_rate")
def scrape_web_rate(modules: int = 6) -> dict:
    """A crawl with the default politeness (1 request/s per host) of a loopback site (robots.txt, an index
    and 6 modules); value = the most requests the server saw in any 1-second window (must be <= 1)."""
    from pipeline_config.schema import ScrapeConfig, WebScrapeConfig
    from tasks.scrape.collect import scrape_sources

    arrivals: list[float] = []
    server = _site(modules, arrivals)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            web = WebScrapeConfig(start_urls=[f"http://127.0.0.1:{server.server_port}/index.html"])
            crawl = timed(
                lambda: scrape_sources(Path(tmp), ScrapeConfig(sources=["web"], web=web), Path(tmp))
            )
    finally:
        server.shutdown()
        server.server_close()
    worst = max(sum(1 for u in arrivals if t <= u < t + 1.0) for t in arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {
        "value": worst,
        "unit": "requests per 1 s window",
        "detail": {
            "rate_limit_per_s": web.rate_limit_per_s,
            "requests": len(arrivals),
            "min_gap_s": round(min(gaps), 3),
            "seconds": round(crawl.seconds, 2),
            "records": crawl.result["rows_out"],
            "goal": "<= 1",
        },
    }
