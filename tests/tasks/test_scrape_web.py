"""The web source (tasks/scrape/web.py) against loopback sites the tests start (tests/fake_site.py; nothing
beyond the machine is reached): link following, every fault the crawler must survive and count, politeness
(rate limit, crawl-delay, robots.txt, allowed hosts on every redirect hop) and the nightly re-crawl that
costs only conditional requests answered by 304. The HTTP client's own pieces are tested in
tests/tasks/common/test_http.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from scrape_builders import assert_valid_metric_names

from pipeline_config.schema import ScrapeConfig, WebScrapeConfig
from tasks.common.io import iter_jsonl
from tests.fake_site import Site, send, sites, static

MODULE = '''\
"""A module served raw."""


def add(a, b):
    """Add two numbers.

    Parameters
    ----------
    a : int
        First.
    b : int
        Second.

    Examples
    --------
    >>> add(1, 2)
    3
    """
    return a + b
'''

PAGE = """<html><head><title>Docs</title></head><body>
<h1>Source of helpers</h1>
<div class="highlight"><pre><span class="k">def</span> <span class="nf">greet</span>(name):
    <span class="sd">&quot;&quot;&quot;Say hello.&quot;&quot;&quot;</span>
    <span class="k">return</span> <span class="s2">&quot;hello &quot;</span> <span class="o">+</span> name
</pre></div>
<pre>$ pip install helpers</pre>
<a href="/index.html">back</a> <a href="mailto:someone@example.org">mail</a>
</body></html>
"""

MALFORMED = """<html><body><div><b>broken <i>nesting</b></i>
<pre>def shout(text):
    &quot;&quot;&quot;Upper-case text.&quot;&quot;&quot;
    return text.upper()
</pre></span><table><tr><td>cell
"""


def links(*paths: str) -> str:
    return "<html><body>" + "".join(f'<a href="{p}">{p}</a>\n' for p in paths) + "</body></html>"


ROBOTS = "User-agent: *\nDisallow: /private/\n"


def crawl(tmp_path: Path, start: str, name: str = "run", **web) -> tuple[dict, dict[str, dict]]:
    """Run the scrape stage's web source into tmp_path/<name>; the HTTP cache is shared by every run."""
    from tasks.scrape.collect import scrape_sources

    out = tmp_path / name
    out.mkdir()
    options = {"rate_limit_per_s": 200.0, "retries": 1, "backoff_s": 0.01, "max_backoff_s": 0.05, **web}
    cfg = ScrapeConfig(sources=["web"], web=WebScrapeConfig(start_urls=[start], **options))
    report = scrape_sources(out, cfg, workspace=tmp_path)
    return report, {r["name"]: r for r in iter_jsonl(out / "records.jsonl")}


# --------------------------------------------------------------------------------------------------------
# One crawl through every fault
# --------------------------------------------------------------------------------------------------------


def flaky() -> Callable:
    calls = {"n": 0}
    good = static('def steady():\n    """Works the second time."""\n    return 1\n', "text/x-python")

    def serve(handler: BaseHTTPRequestHandler) -> int:
        calls["n"] += 1
        return send(handler, 500, b"busy") if calls["n"] == 1 else good(handler)

    return serve


def slow(handler: BaseHTTPRequestHandler) -> int:
    time.sleep(1.0)  # longer than the crawl's 0.4 s timeout, before a single byte
    try:
        return send(handler, 200, b'def late():\n    """Too late."""\n')
    except OSError:  # the client gave up
        return 0


def trickle(handler: BaseHTTPRequestHandler) -> int:
    """Headers at once, then a byte every 0.1 s: no single read times out, the whole request does."""
    body = b'def drip():\n    """Drip."""\n'
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass
    return 200


def cut(handler: BaseHTTPRequestHandler) -> int:
    """Promises 1000 bytes, sends 100, closes the connection (HTTP/1.0: the handler's end closes it)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"#" * 100)
    return 200


def unsized(handler: BaseHTTPRequestHandler) -> int:
    """A body over the cap with no Content-Length: only counting while reading can stop it."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/x-python")
    handler.end_headers()
    try:
        handler.wfile.write(b"x = 1\n" * 1000)
    except OSError:
        pass
    return 200


@pytest.fixture(scope="module")
def faulty_crawl(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict, dict[str, dict], Site, Site]]:
    """One crawl (a few seconds: timeouts) shared by the tests that read its report."""
    with sites() as serve:
        yield _faulty_crawl(tmp_path_factory.mktemp("faulty"), serve)


def _faulty_crawl(tmp_path: Path, serve) -> tuple[dict, dict[str, dict], Site, Site]:
    elsewhere = serve({"/evil.py": static('def evil():\n    """Never fetched."""\n', "text/x-python")})
    site = serve({})
    site.routes.update(
        {
            "/robots.txt": static(ROBOTS, "text/plain"),
            "/index.html": static(
                links(
                    "/code/mod.py",
                    "/docs/page.html#section",
                    "/malformed.html",
                    "/missing.py",
                    "/flaky.py",
                    "/slow.py",
                    "/trickle.py",
                    "/big.py",
                    "/unsized.py",
                    "/cut.py",
                    "/private/secret.py",
                    "/redirect-private",
                    "/redirect-off",
                    "/redirect-in",
                    f"{elsewhere.url}/evil.py",  # an off-host link: not followed
                )
            ),
            "/code/mod.py": static(MODULE, "text/x-python"),
            "/code/moved.py": static('def relocated():\n    """Moved here."""\n', "text/x-python"),
            "/docs/page.html": static(PAGE),
            "/malformed.html": static(MALFORMED),
            "/flaky.py": flaky(),
            "/slow.py": slow,
            "/trickle.py": trickle,
            "/big.py": (200, b"y = 2\n" * 1000, {"Content-Type": "text/x-python"}),
            "/unsized.py": unsized,
            "/cut.py": cut,
            "/private/secret.py": static('def secret():\n    """Disallowed."""\n', "text/x-python"),
            "/redirect-private": (302, b"", {"Location": "/private/secret.py"}),
            "/redirect-off": (302, b"", {"Location": f"{elsewhere.url}/evil.py"}),
            "/redirect-in": (301, b"", {"Location": "/code/moved.py"}),
        }
    )
    report, records = crawl(tmp_path, f"{site.url}/index.html", timeout_s=0.4, max_bytes=2000)
    return report, records, site, elsewhere


def test_crawl_extracts_python_files_and_html_code_blocks(faulty_crawl) -> None:
    report, records, site, _ = faulty_crawl
    assert set(records) == {
        "code.mod.add",
        "docs.page.greet",  # from a <pre> full of highlighting spans
        "malformed.shout",
        "flaky.steady",
        "code.moved.relocated",
    }
    add = records["code.mod.add"]
    assert add["signature"] == "def add(a, b)"
    assert add["doctest_examples"] == [{"source": "add(1, 2)\n", "want": "3\n"}]
    assert [p["name"] for p in add["sections"]["params"]] == ["a", "b"]
    assert add["path"] == add["provenance"]["location"] == f"{site.url}/code/mod.py"
    assert add["provenance"]["source"] == "web"
    assert add["provenance"]["sha256"] == hashlib.sha256(MODULE.encode()).hexdigest()
    assert records["docs.page.greet"]["code"].startswith('def greet(name):\n    """Say hello."""')
    assert records["code.moved.relocated"]["path"] == f"{site.url}/code/moved.py"  # where the redirect led
    assert report["rows_out"] == 5
    assert report["web"]["html"]["code_blocks"] == 3
    assert report["web"]["html"]["code_blocks_not_python"] == 1  # the shell session


def test_every_fault_is_counted_with_its_reason(faulty_crawl) -> None:
    report, _, _, _ = faulty_crawl
    pages = report["web"]["pages"]
    assert pages["failed"] == {
        "connection_error": 1,  # /cut.py: closed mid-body, after a retry
        "http_404": 1,
        "offhost_redirect_refused": 1,
        "over_size": 2,  # /big.py by its Content-Length, /unsized.py while reading
        "robots_disallowed": 2,  # /private/secret.py, and the redirect that led there
        "timeout": 2,  # /slow.py (no answer), /trickle.py (answers, too slowly)
    }
    assert pages["failed_examples"]["http_404"][0].endswith("/missing.py")
    # index, mod, page, malformed, flaky, moved are fetched; the other 9 of the 15 failed
    assert (pages["seen"], pages["read"], pages["parsed"]) == (15, 6, 5)
    assert report["web"]["html"]["malformed_html"] == 1
    summary = (Path(report["web"]["cache_dir"]).parents[1] / "run" / "report.md").read_text()
    assert "| http_404 | 1 |" in summary and "1 malformed" in summary
    assert_valid_metric_names(report)


def test_500_then_200_is_retried(faulty_crawl) -> None:
    report, records, site, _ = faulty_crawl
    http = report["web"]["http"]
    assert [h.status for h in site.hits if h.path == "/flaky.py"] == [500, 200]
    assert "flaky.steady" in records
    assert http["by_status"]["500"] == 1
    # flaky once; slow, trickle and cut once each before giving up (retries=1)
    assert http["retries"] == 4


def test_no_request_leaves_the_allowed_hosts(faulty_crawl) -> None:
    report, _, site, elsewhere = faulty_crawl
    assert report["web"]["allowed_hosts"] == [site.netloc]
    assert elsewhere.hits == []  # neither the off-host link nor the redirect reached it
    assert "/private/secret.py" not in site.paths()  # robots.txt is checked on the redirect's hop too
    assert report["web"]["http"]["refused"] == {
        "offhost_redirect_refused": 1,
        "over_size": 2,
        "robots_disallowed": 2,
    }


def test_requests_identify_the_crawler_and_read_robots_first(faulty_crawl) -> None:
    _, _, site, _ = faulty_crawl
    assert {h.headers.get("User-Agent") for h in site.hits} == {WebScrapeConfig().user_agent}
    assert site.paths()[0] == "/robots.txt"


# --------------------------------------------------------------------------------------------------------
# The nightly re-crawl, link rules, robots.txt answers
# --------------------------------------------------------------------------------------------------------


def small_site(serve, **extra) -> Site:
    return serve(
        {
            "/robots.txt": static(ROBOTS, "text/plain"),
            "/index.html": static(links("/code/mod.py", "/docs/page.html")),
            "/code/mod.py": static(MODULE, "text/x-python"),
            "/docs/page.html": static(PAGE),
            **extra,
        }
    )


def test_second_run_makes_only_conditional_requests(tmp_path: Path, serve) -> None:
    site = small_site(serve)
    first, records = crawl(tmp_path, f"{site.url}/index.html", name="night1")
    assert first["web"]["http"]["not_modified"] == 0 and len(records) == 2
    site.hits.clear()
    second, again = crawl(tmp_path, f"{site.url}/index.html", name="night2")
    assert len(site.hits) == 4  # robots.txt, index, mod, page
    for hit in site.hits:
        assert "If-None-Match" in hit.headers or "If-Modified-Since" in hit.headers, hit.path
        assert hit.status == 304, hit.path
    http = second["web"]["http"]
    assert (http["requests"], http["not_modified"], http["cache_hits"]) == (4, 4, 4)
    assert http["by_status"] == {"304": 4}
    assert {n: r["id"] for n, r in again.items()} == {n: r["id"] for n, r in records.items()}
    assert "4 not modified (304)" in (tmp_path / "night2" / "report.md").read_text()


def test_a_changed_page_is_fetched_again(tmp_path: Path, serve) -> None:
    site = small_site(serve)
    crawl(tmp_path, f"{site.url}/index.html", name="night1")
    changed = MODULE.replace("Add two numbers.", "Sum two numbers.")
    site.routes["/code/mod.py"] = static(changed, "text/x-python")
    report, records = crawl(tmp_path, f"{site.url}/index.html", name="night2")
    assert report["web"]["http"]["by_status"] == {"200": 1, "304": 3}
    assert records["code.mod.add"]["sections"]["summary"] == "Sum two numbers."


def test_depth_patterns_and_max_pages(tmp_path: Path, serve) -> None:
    site = small_site(serve)
    start = f"{site.url}/index.html"
    _, records = crawl(tmp_path, start, name="depth0", max_depth=0)
    assert records == {} and site.paths() == ["/robots.txt", "/index.html"]
    site.hits.clear()
    _, records = crawl(tmp_path, start, name="patterns", url_patterns=[r"/code/"])
    assert set(records) == {"code.mod.add"} and "/docs/page.html" not in site.paths()
    report, _ = crawl(tmp_path, start, name="max_pages", max_pages=2)
    assert report["web"]["pages"]["read"] == 2
    assert report["web"]["pages"]["skipped"] == {"over_max_pages": 1}


def test_robots_answers(tmp_path: Path, serve) -> None:
    down = serve({"/robots.txt": (503, b"down"), "/index.html": static(links())})
    report, _ = crawl(tmp_path, f"{down.url}/index.html", name="down")
    # RFC 9309: a robots.txt that cannot be fetched forbids the host
    assert report["web"]["pages"]["failed"] == {"robots_disallowed": 1}
    assert "/index.html" not in down.paths()
    absent = serve(
        {"/index.html": static(links("/code/mod.py")), "/code/mod.py": static(MODULE, "text/x-python")}
    )
    _, records = crawl(tmp_path, f"{absent.url}/index.html", name="absent")
    assert set(records) == {"code.mod.add"}  # robots.txt 404: everything allowed


# --------------------------------------------------------------------------------------------------------
# Politeness in time: the default rate limit and a longer crawl-delay
# --------------------------------------------------------------------------------------------------------


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_default_rate_is_one_request_per_second_per_host(tmp_path: Path, serve) -> None:
    site = small_site(serve)
    assert WebScrapeConfig().rate_limit_per_s == 1.0
    crawl(tmp_path, f"{site.url}/index.html", rate_limit_per_s=1.0)
    times = [h.at for h in site.hits]
    assert len(times) == 4
    assert max_in_window(times) == 1
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 1.0


def test_robots_crawl_delay_wins_when_longer(tmp_path: Path, serve) -> None:
    site = serve(
        {
            "/robots.txt": static("User-agent: *\nCrawl-delay: 1.5\n", "text/plain"),
            "/index.html": static(links("/code/mod.py")),
            "/code/mod.py": static(MODULE, "text/x-python"),
        }
    )
    report, _ = crawl(tmp_path, f"{site.url}/index.html", rate_limit_per_s=100.0)
    times = [h.at for h in site.hits]
    assert len(times) == 3
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 1.5
    assert report["web"]["robots"] == [{"site": site.url, "status": 200, "crawl_delay_s": 1.5}]
