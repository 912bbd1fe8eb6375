"""The web as a source: a polite breadth-first crawl from `scrape.web.start_urls`.

Pages are raw `.py` files (a repository browser's raw view) or HTML whose `<pre>` blocks hold code (a
docs site's source pages); an HTML page's links are followed within `max_depth`, `url_patterns` and
`allowed_hosts`, up to `max_pages`. Politeness lives in the shared client (tasks/common/http.py): per-host
rate limit, byte cap, timeout, retries, on-disk cache with revalidation, redirects checked hop by hop.
robots.txt is read per host through the same client (so it is cached and revalidated too); its
crawl-delay raises that host's interval when it is longer than the rate limit. Following RFC 9309, a
robots.txt that answers 4xx allows everything and one that cannot be fetched (5xx, timeout) forbids the
host for this run.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter, deque
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import requests
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning
from protego import Protego

from pipeline_config.schema import WebScrapeConfig
from tasks.common.http import HttpClient, HttpSettings, RefusedError, host_allowed
from tasks.scrape.extract import Origin, UnreadableError, decode, module_records, parse
from tasks.scrape.report import Tally

PYTHON_TYPES = {"text/x-python", "text/x-script.python", "application/x-python", "application/x-python-code"}
# elements whose end tag HTML lets an author leave out: not a sign of a malformed page
OPTIONAL_END = {
    "html",
    "head",
    "body",
    "p",
    "li",
    "dt",
    "dd",
    "tr",
    "td",
    "th",
    "thead",
    "tbody",
    "tfoot",
    "option",
}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

# the scrape.web keys that are HTTP client settings as they are
_HTTP_KEYS = "user_agent timeout_s max_bytes retries backoff_s max_backoff_s rate_limit_per_s".split()


def settings(cfg: WebScrapeConfig, cache_dir: Path | None) -> HttpSettings:
    allowed = cfg.allowed_hosts or sorted({urlsplit(u).netloc.lower() for u in cfg.start_urls})
    passed = {key: getattr(cfg, key) for key in _HTTP_KEYS}
    return HttpSettings(**passed, cache_dir=cache_dir, allowed_hosts=tuple(allowed))


class Robots:
    """robots.txt per scheme://host:port, fetched once per crawl through the client."""

    def __init__(self, client: HttpClient, user_agent: str):
        self.client, self.user_agent = client, user_agent
        self.rules: dict[str, Protego | bool] = {}  # True: allow all; False: forbid all
        self.report: list[dict] = []  # a list, not keyed by site: URLs are not valid MLflow metric names

    def refusal(self, url: str) -> str | None:
        parts = urlsplit(url)
        site = f"{parts.scheme}://{parts.netloc}"
        if site not in self.rules:
            self.rules[site] = self._fetch(site, parts.hostname or "")
        rules = self.rules[site]
        allowed = rules if isinstance(rules, bool) else rules.can_fetch(url, self.user_agent)
        return None if allowed else "robots_disallowed"

    def _fetch(self, site: str, host: str) -> Protego | bool:
        try:
            resp = self.client.get(f"{site}/robots.txt")
        except (requests.RequestException, RefusedError) as exc:
            self.report.append(
                {"site": site, "status": type(exc).__name__, "effect": "host forbidden (unreachable)"}
            )
            return False
        if 400 <= resp.status_code < 500:
            self.report.append({"site": site, "status": resp.status_code, "effect": "everything allowed"})
            return True
        if not resp.ok:
            self.report.append(
                {"site": site, "status": resp.status_code, "effect": "host forbidden (unreachable)"}
            )
            return False
        rules = Protego.parse(resp.content.decode("utf-8", "replace"))
        delay = rules.crawl_delay(self.user_agent)
        if delay:
            self.client.limiter.set_delay(host, float(delay))
        self.report.append({"site": site, "status": resp.status_code, "crawl_delay_s": delay})
        return rules


class _Balance(HTMLParser):
    """Counts end tags that close nothing and elements left open: a malformed page (still extracted)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors = 0

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag not in self.stack:
            self.errors += tag not in VOID
            return
        while self.stack and (top := self.stack.pop()) != tag:
            self.errors += top not in OPTIONAL_END


def is_malformed(html: str) -> bool:
    checker = _Balance()
    checker.feed(html)
    checker.close()
    return bool(checker.errors or [t for t in checker.stack if t not in OPTIONAL_END])


def module_name(url: str) -> str:
    """A dotted name from the URL's path: /src/pkg/mod.py -> src.pkg.mod."""
    path = re.sub(r"\.(py|html?)$", "", urlsplit(url).path.strip("/"))
    parts = [re.sub(r"\W", "_", p) for p in path.split("/") if p]
    return ".".join(parts)


class Crawler:
    def __init__(self, cfg: WebScrapeConfig, client: HttpClient, tally: Tally, include_private: bool):
        self.cfg, self.client, self.tally, self.include_private = cfg, client, tally, include_private
        self.robots = Robots(client, cfg.user_agent)
        self.follow = [re.compile(p) for p in cfg.url_patterns]
        self.exclude = [re.compile(p) for p in cfg.exclude_patterns]
        self.counts: Counter = Counter()  # code blocks, links, malformed pages

    def crawl(self) -> Iterator[dict]:
        frontier = deque((urldefrag(u).url, 0) for u in self.cfg.start_urls)
        queued = {url for url, _ in frontier}
        fetched = 0
        while frontier:
            if fetched >= self.cfg.max_pages:
                self.tally.skipped["over_max_pages"] += len(frontier)
                break
            url, depth = frontier.popleft()
            self.tally.files["seen"] += 1
            resp = self._fetch(url)
            if resp is None:
                continue
            fetched += 1
            self.tally.files["read"] += 1
            url = resp.url or url  # where the redirects led: what the records name, not to be fetched again
            queued.add(url)
            for link in (yield from self._records(url, resp)):
                if link in queued:
                    continue
                if depth >= self.cfg.max_depth:
                    self.counts["links_beyond_depth"] += 1
                elif not self._wanted(link):
                    self.counts["links_not_followed"] += 1
                else:
                    queued.add(link)
                    frontier.append((link, depth + 1))

    def _wanted(self, url: str) -> bool:
        if not url.startswith(("http://", "https://")):
            return False
        if not host_allowed(url, self.client.settings.allowed_hosts):
            return False
        if self.follow and not any(p.search(url) for p in self.follow):
            return False
        return not any(p.search(url) for p in self.exclude)

    def _fetch(self, url: str) -> requests.Response | None:
        try:
            resp = self.client.get(url, allow=self.robots.refusal)
        except RefusedError as exc:
            self.tally.fail(exc.reason, url)
            return None
        except requests.Timeout:
            self.tally.fail("timeout", url)
            return None
        except requests.TooManyRedirects:
            self.tally.fail("too_many_redirects", url)
            return None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):  # closed mid-body too
            self.tally.fail("connection_error", url)
            return None
        except requests.RequestException as exc:
            self.tally.fail(type(exc).__name__, url)
            return None
        if not 200 <= resp.status_code < 300:  # a 3xx here had no Location to follow
            self.tally.fail(f"http_{resp.status_code}", url)
            return None
        return resp

    def _records(self, url: str, resp: requests.Response):
        """Yield the page's records; return the links it holds (absolute, without fragments)."""
        kind = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        sha256 = hashlib.sha256(resp.content).hexdigest()
        if kind in PYTHON_TYPES or urlsplit(url).path.endswith(".py"):
            try:
                text = decode(resp.content)
                tree = parse(text, url)
            except UnreadableError as exc:
                self.tally.fail(exc.reason, url)
                return []
            self.tally.files["parsed"] += 1
            yield from module_records(
                text, tree, self._origin(url), sha256, self.include_private, self.tally.definitions
            )
            return []
        if "html" not in kind:
            self.tally.skip(f"content_type:{kind or 'none'}")
            return []
        # the header's charset if it names one, else bs4 reads <meta charset> or guesses (requests' own
        # fallback for text/* without a charset is ISO-8859-1, which garbles UTF-8 pages)
        declared = "charset=" in resp.headers.get("Content-Type", "").lower()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
            soup = BeautifulSoup(
                resp.content, "html.parser", from_encoding=resp.encoding if declared else None
            )
        if is_malformed(resp.content.decode(soup.original_encoding or "utf-8", "replace")):
            self.counts["malformed_html"] += 1
        parsed_any = False
        for block in soup.find_all("pre"):
            self.counts["code_blocks"] += 1
            try:
                text = block.get_text()
                tree = parse(text, url)
            except UnreadableError:
                self.counts["code_blocks_not_python"] += 1  # console sessions, shell, other languages
                continue
            parsed_any = True
            yield from module_records(
                text, tree, self._origin(url), sha256, self.include_private, self.tally.definitions
            )
        self.tally.files["parsed"] += parsed_any
        base = resp.url or url
        return [urldefrag(urljoin(base, a["href"])).url for a in soup.find_all("a", href=True)]

    def _origin(self, url: str) -> Origin:
        return Origin("web", url, url, module_name(url))


def web_records(
    cfg: WebScrapeConfig, cache_dir: Path | None, tally: Tally, include_private: bool
) -> tuple[Iterator[dict], dict]:
    """The crawl's records (lazily) and the web report, filled in as the crawl goes."""
    info: dict = {}

    def records() -> Iterator[dict]:
        client = HttpClient(settings(cfg, cache_dir))
        crawler = Crawler(cfg, client, tally, include_private)
        try:
            yield from crawler.crawl()
        finally:
            client.close()
            info.update(
                http=client.stats.as_dict(),
                robots=crawler.robots.report,
                html=dict(sorted(crawler.counts.items())),
                allowed_hosts=list(client.settings.allowed_hosts),
                cache_dir=str(cache_dir) if cache_dir else None,
            )

    return records(), info
