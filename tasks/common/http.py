"""The shared HTTP client: one place for politeness, caching, limits and retries (scrape's crawler; the
teacher client can move onto it).

- requests-cache keeps responses on disk and revalidates each one with the server (If-None-Match /
  If-Modified-Since) instead of trusting it blindly, so an unchanged nightly re-crawl costs only 304s.
  Responses without a validator are not stored (they could never be revalidated).
- `CappedAdapter` sits under the cache, on the wire: it waits for the host's rate-limit slot, counts every
  request and status, and reads the body itself, so that the byte cap and the whole-request timeout hold
  before anything reaches the cache (requests-cache would otherwise read an unbounded body to store it).
- tenacity retries 429, 5xx, timeouts and dropped connections with jittered exponential backoff, or waits
  for the server's Retry-After (seconds or an HTTP date), capped.
- `get` follows redirects itself, one hop at a time, checking each target against the allowed hosts (and
  the caller's own rule, e.g. robots.txt) before anything is sent there.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import requests_cache
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

CHUNK = 64 * 1024
# Spacing added to every rate-limit interval so that a server timestamping arrivals never sees two requests
# inside one interval because of scheduling jitter on either side.
RATE_MARGIN_S = 0.005
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class RefusedError(requests.RequestException):
    """A request this client will not send (or finish); `reason` is the report's counter name."""

    reason = "refused"


class BodyTooLargeError(RefusedError):
    reason = "over_size"


class HostNotAllowedError(RefusedError):
    reason = "host_not_allowed"


class OffHostRedirectError(RefusedError):
    reason = "offhost_redirect_refused"


class RuleRefusedError(RefusedError):
    """The caller's rule (robots.txt) refused a URL; `reason` is the rule's own."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.reason = reason


class _RetryableStatusError(requests.RequestException):
    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code} from {response.url}", response=response)


@dataclass(frozen=True)
class HttpSettings:
    user_agent: str
    timeout_s: float = 30.0  # connecting, and reading the whole response
    max_bytes: int | None = None  # per body, after decompression
    retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    jitter: bool = (
        True  # full jitter (uniform up to the exponential step): clients that failed together spread out
    )
    rate_limit_per_s: float | None = None  # per host name; None: no limit
    cache_dir: Path | None = None  # None: no HTTP cache
    allowed_hosts: tuple[str, ...] = ()  # host names (any port) or host:port; empty: any host
    max_redirects: int = 5


@dataclass
class HttpStats:
    """What happened on the wire, for the stage report."""

    requests: int = 0  # sent on the wire (retries, redirect hops and revalidations each count)
    cache_hits: int = 0  # answered from the cache (a 304 included)
    not_modified: int = 0  # 304s: revalidated cache entries
    retries: int = 0
    by_status: Counter = field(default_factory=Counter)  # wire responses per status
    refused: Counter = field(default_factory=Counter)  # requests not sent, per reason

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "not_modified": self.not_modified,
            "retries": self.retries,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "refused": dict(sorted(self.refused.items())),
        }


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """An entry with a port matches host:port exactly; one without matches the host name on any port."""
    if not allowed:
        return True
    parts = urlsplit(url)
    host, netloc = (parts.hostname or "").lower(), parts.netloc.lower().rsplit("@", 1)[-1]
    return any(entry.lower() in ((netloc,) if ":" in entry else (host,)) for entry in allowed)


class HostRateLimiter:
    """At most one request per interval per host name; a host's own delay (robots crawl-delay) may be longer.

    A request reserves its slot under the lock and sleeps outside it, so threads crawling other hosts
    never wait for this one.
    """

    def __init__(self, per_s: float | None, sleep=time.sleep, clock=time.monotonic):
        self.interval = 1.0 / per_s if per_s else 0.0
        self._sleep, self._clock = sleep, clock
        self._next: dict[str, float] = {}
        self._last: dict[str, float] = {}  # the latest slot handed out per host
        self._delay: dict[str, float] = {}
        self._lock = threading.Lock()

    def set_delay(self, host: str, seconds: float) -> None:
        """A longer interval for one host, counted from its latest request (robots.txt's own fetch)."""
        with self._lock:
            self._delay[host] = max(self._delay.get(host, 0.0), seconds)
            if host in self._last:
                self._next[host] = max(self._next[host], self._last[host] + seconds + RATE_MARGIN_S)

    def interval_for(self, host: str) -> float:
        return max(self.interval, self._delay.get(host, 0.0))

    def wait(self, host: str) -> None:
        interval = self.interval_for(host)
        if not interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + interval + RATE_MARGIN_S
            self._last[host] = slot
        if slot > now:
            self._sleep(slot - now)


class CappedAdapter(HTTPAdapter):
    """The wire: rate limit, counting, and a body read under the byte cap and the whole-request deadline."""

    def __init__(self, settings: HttpSettings, stats: HttpStats, limiter: HostRateLimiter):
        super().__init__()
        self.settings, self.stats, self.limiter = settings, stats, limiter

    def send(self, request, stream=False, timeout=None, **kwargs):  # the body is read here
        self.limiter.wait(urlsplit(request.url).hostname or "")
        self.stats.requests += 1
        start = time.monotonic()
        resp = super().send(request, stream=True, timeout=timeout, **kwargs)
        self.stats.by_status[resp.status_code] += 1
        cap, url = self.settings.max_bytes, request.url
        length = resp.headers.get("Content-Length", "")
        if cap and length.isdigit() and int(length) > cap:
            resp.close()  # refused before reading: the header already says it is too big
            raise BodyTooLargeError(f"{url}: Content-Length {length} > max_bytes {cap}")
        chunks, size = [], 0
        try:
            # read1: whatever has arrived, so that a server trickling bytes cannot outlast the deadline
            while chunk := resp.raw.read1(CHUNK, decode_content=True):
                size += len(chunk)
                if cap and size > cap:
                    raise BodyTooLargeError(f"{url}: body over max_bytes {cap}")
                if time.monotonic() - start > self.settings.timeout_s:
                    raise requests.exceptions.ReadTimeout(
                        f"{url}: body not read in {self.settings.timeout_s}s"
                    )
                chunks.append(chunk)
        except ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(f"{url}: {exc}") from None
        except ProtocolError as exc:  # the server closed the connection mid-body
            raise requests.exceptions.ChunkedEncodingError(f"{url}: {exc}") from None
        except DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(f"{url}: {exc}") from None
        finally:
            resp.close()
        resp._content, resp._content_consumed = b"".join(chunks), True
        return resp


def retry_after_s(resp: requests.Response | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    raw = (resp.headers.get("Retry-After") or "").strip() if resp is not None else ""
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpClient:
    """A session with the module's policies; `stats` counts what it did."""

    def __init__(self, settings: HttpSettings, sleep: Callable[[float], None] = time.sleep):
        self.settings, self._sleep = settings, sleep
        self.stats = HttpStats()
        self.limiter = HostRateLimiter(settings.rate_limit_per_s, sleep)
        if settings.cache_dir is not None:
            Path(settings.cache_dir).mkdir(parents=True, exist_ok=True)
            self.session: requests.Session = requests_cache.CachedSession(
                str(Path(settings.cache_dir) / "http"),
                backend="sqlite",
                # stored, but revalidated on every use: a conditional request, a 304 when unchanged
                expire_after=requests_cache.EXPIRE_IMMEDIATELY,
                cache_control=True,  # a server's own max-age / no-store wins
                allowable_methods=("GET", "HEAD"),
            )
        else:
            self.session = requests.Session()
        adapter = CappedAdapter(settings, self.stats, self.limiter)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = settings.user_agent

    def close(self) -> None:
        self.session.close()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        server = retry_after_s(getattr(error, "response", None))
        if server is not None:
            return min(server, self.settings.max_backoff_s)
        s = self.settings
        wait = wait_random_exponential if s.jitter else wait_exponential
        return wait(multiplier=s.backoff_s, max=s.max_backoff_s)(state)

    def _count_retry(self, _state: RetryCallState) -> None:
        self.stats.retries += 1

    def _send_once(self, method: str, url: str, **kwargs) -> requests.Response:
        resp = self.session.request(
            method, url, allow_redirects=False, timeout=self.settings.timeout_s, **kwargs
        )
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _RetryableStatusError(resp)
        if getattr(resp, "from_cache", False):
            self.stats.cache_hits += 1
            self.stats.not_modified += bool(getattr(resp, "revalidated", False))
        return resp

    def request(self, method: str, url: str, **kwargs) -> requests.Response:
        """One hop, retried; after the last attempt a 429/5xx response is returned for the caller to judge.

        Raises the last transient error (Timeout, ConnectionError), or RefusedError; nothing else is retried
        (a bad request stays bad: retrying would only hide the configuration error).
        """
        if not host_allowed(url, self.settings.allowed_hosts):
            self.stats.refused[HostNotAllowedError.reason] += 1
            raise HostNotAllowedError(
                f"{url}: host not in the allowed hosts {list(self.settings.allowed_hosts)}"
            )
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type((*TRANSIENT, _RetryableStatusError)),
            before_sleep=self._count_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_once, method, url, **kwargs)
        except _RetryableStatusError as exc:
            return exc.response
        except BodyTooLargeError:
            self.stats.refused[BodyTooLargeError.reason] += 1
            raise

    def get(self, url: str, allow: Callable[[str], str | None] | None = None) -> requests.Response:
        """GET following redirects one hop at a time; every hop must be on an allowed host and pass `allow`
        (which returns a refusal reason, or None)."""
        for _ in range(self.settings.max_redirects + 1):
            if allow and (reason := allow(url)):
                self.stats.refused[reason] += 1
                raise RuleRefusedError(url, reason)
            resp = self.request("GET", url)
            if not (resp.is_redirect and resp.headers.get("Location")):
                return resp
            target = urljoin(resp.url or url, resp.headers["Location"])
            if not host_allowed(target, self.settings.allowed_hosts):
                self.stats.refused[OffHostRedirectError.reason] += 1
                raise OffHostRedirectError(f"{url} redirects to {target}, outside the allowed hosts")
            url = target
        raise requests.TooManyRedirects(f"{url}: more than {self.settings.max_redirects} redirects")
