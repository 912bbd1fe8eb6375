"""A teacher behind an HTTP API: the transport, written once for every dialect (tasks/common/teacher/
dialects/: OpenAI-compatible `/chat/completions`, Anthropic's Messages), which says what goes on the wire.

- `teacher.max_concurrency` requests in flight from a thread pool. Each worker borrows a keep-alive
  requests.Session from a small pool, so no Session is shared by two threads at once; completions come
  back in prompt order.
- tenacity retries connection errors, timeouts, 429 and 5xx with jittered exponential backoff, or waits
  the server's Retry-After (delta-seconds or an HTTP date), capped at MAX_DELAY_S. Any other 4xx is a
  configuration error and raises TeacherError at once.
- A prompt still failing after its retries comes back as None, counted by kind (http_503, timeout,
  connection, bad_response); a budget cap (accounting.py) stops the teacher cleanly, the prompts left come
  back as None.
- Each finished call goes into the on-disk CallCache as it completes: a re-run sends only what is missing.
- The API key comes from the environment variable the config names (`teacher.api_key_env`, else the
  dialect's own: OPENAI_API_KEY, ANTHROPIC_API_KEY). Neither it nor a password embedded in
  base_url reaches a log line, an error message or repr: URLs are shown redacted (pipeline_config.redact,
  which also redacts the config MLflow and the run summary see) and every message is scrubbed of both.
"""

from __future__ import annotations

import base64
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random_exponential,
)

from pipeline_config.redact import redact_url
from pipeline_config.schema import TeacherConfig
from tasks.common.http import TRANSIENT, retry_after_s
from tasks.common.teacher import TeacherError
from tasks.common.teacher.accounting import Accounting
from tasks.common.teacher.cache import CallCache, call_key
from tasks.common.teacher.dialects import BadResponse, Dialect, Request, load

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
MAX_DELAY_S = 30.0  # neither our backoff nor a server's Retry-After may stall a request longer than this
MAX_ERROR_CHARS = 500  # server error bodies can be whole HTML pages; keep messages readable
# "Equal jitter": the n-th wait is d + uniform(0, d), d = 0.5 s doubling (30 s at most): never hammering a
# server that just failed, while requests that failed together (N in flight) spread out.
BACKOFF = wait_exponential(multiplier=BACKOFF_BASE_S, max=MAX_DELAY_S / 2) + wait_random_exponential(
    multiplier=BACKOFF_BASE_S, max=MAX_DELAY_S / 2
)


class _RetryableStatus(Exception):
    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.retry_after = status, retry_after


class _BudgetExhausted(Exception):
    pass


_RETRYABLE = (*TRANSIENT, _RetryableStatus)


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatus):
        return f"http_{exc.status}"
    if isinstance(exc, BadResponse):
        return "bad_response"
    if isinstance(exc, requests.Timeout):  # before ConnectionError: ConnectTimeout is both
        return "timeout"
    return "connection"


def _json(resp: requests.Response):
    try:
        return resp.json()
    except ValueError:
        return None


def _error_text(resp: requests.Response, dialect: Dialect) -> str:
    """The server's own explanation in the dialect's error shape when it has one, else the raw body."""
    message = dialect.error_message(_json(resp))
    return str(message if message else (resp.text or resp.reason or "").strip())[:MAX_ERROR_CHARS]


def _completion(resp: requests.Response, dialect: Dialect) -> tuple[str, dict]:
    """(text, usage) of a 2xx; usage holds prompt_tokens / completion_tokens, 0 when absent."""
    data = _json(resp)
    try:
        if data is None:
            raise BadResponse("not JSON")
        text, prompt_tokens, completion_tokens = dialect.completion(data)
    except BadResponse as exc:
        raise BadResponse(f"unexpected response ({exc}): {resp.text[:MAX_ERROR_CHARS]}") from None
    return text, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}


class RemoteTeacher:
    """Completions from a server speaking `teacher.backend`'s dialect: one request per prompt, N in flight,
    retried."""

    def __init__(
        self,
        cfg: TeacherConfig,
        cache: CallCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not cfg.base_url:
            raise ValueError(f"teacher.backend {cfg.backend!r} needs teacher.base_url")
        self.cfg, self.cache, self.dialect = cfg, cache, load(cfg.backend)
        self._url = cfg.base_url.rstrip("/") + self.dialect.path  # may hold user:password: never shown
        self.url = redact_url(self._url)
        self.accounting = Accounting(cfg, clock)
        self._sleep = sleep
        self._asked: Counter = Counter()  # how often each prompt was asked: the n-th sample's cache key
        self._sessions: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
        self._all_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        # held only in the sessions' headers and here, for scrubbing; never logged or put in a message
        key_env = cfg.api_key_env or self.dialect.key_env
        self._api_key = os.environ.get(key_env) or None
        self._secrets = [self._api_key] if self._api_key else []
        parts = urlsplit(cfg.base_url)
        if parts.password and self._api_key:
            # one Authorization header per request: requests would send the URL's Basic auth and drop the key
            raise ValueError(
                f"teacher.base_url ({redact_url(cfg.base_url)}) carries a user:password and "
                f"${key_env} (teacher.api_key_env) holds an API key, but a request has one "
                "Authorization header: remove the credentials from the URL, or name an unset variable in "
                "teacher.api_key_env"
            )
        if parts.password:  # requests sends it as Basic auth: a server echoing that header leaks it too
            basic = f"{unquote(parts.username or '')}:{unquote(parts.password)}"
            self._secrets += [
                parts.password,
                unquote(parts.password),
                base64.b64encode(basic.encode()).decode(),
            ]

    def __repr__(self) -> str:
        return f"RemoteTeacher({self.cfg.backend}, url={self.url!r}, model={self.cfg.model!r})"

    def stats(self) -> dict:
        return self.accounting.stats()

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._all_sessions:
                session.close()

    def generate(self, prompts: list[str]) -> list[str | None]:
        acct = self.accounting
        with acct.timed():
            acct.add("prompts", len(prompts))
            keys = [self._key(p) for p in prompts]
            out: list[str | None] = [None] * len(prompts)
            todo = []
            for i, key in enumerate(keys):
                hit = self.cache.get(key) if key else None
                if hit is not None:
                    out[i] = hit["text"]
                    acct.add("cache_hits")
                else:
                    todo.append(i)
            if not todo:
                return out
            abort = threading.Event()
            pool = ThreadPoolExecutor(min(self.cfg.max_concurrency, len(todo)), thread_name_prefix="teacher")
            futures = {i: pool.submit(self._one, prompts[i], keys[i], abort) for i in todo}
            try:
                for i, future in futures.items():
                    out[i] = future.result()
            except BaseException:
                # a configuration error: ask nothing more; the calls in flight finish and are cached
                abort.set()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            return out

    # ---- one prompt ----------------------------------------------------------------------------------

    def _key(self, prompt: str) -> str | None:
        if self.cache is None:
            return None
        # A sampling server is not reproducible, so there is no per-call seed to key on; the n-th time a
        # prompt is asked is its own sample instead (two identical prompts still get two answers), and
        # unlike a call index it does not shift when the caller groups prompts into calls differently.
        sample = self._asked[prompt] if self.cfg.temperature > 0 else None
        self._asked[prompt] += 1
        return call_key(
            backend=self.cfg.backend,
            url=self.url,
            model=self.cfg.model,
            temperature=self.cfg.temperature,
            max_new_tokens=self.cfg.max_new_tokens,
            sample=sample,
            prompt=prompt,
        )

    def _one(self, prompt: str, key: str | None, abort: threading.Event) -> str | None:
        acct = self.accounting
        if abort.is_set():
            acct.add("skipped")
            return None
        retrying = Retrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            text, usage = retrying(self._attempt, self._body(prompt))
        except _BudgetExhausted:
            acct.add("skipped")
            return None
        except (*_RETRYABLE, BadResponse) as exc:
            acct.fail(_failure_kind(exc))
            log.warning(self._scrub(f"teacher request to {self.url} failed, giving up on it: {exc}"))
            return None
        except TeacherError:
            abort.set()  # here, before this worker picks up the next prompt
            raise
        except requests.RequestException as exc:  # an invalid URL, a missing scheme: no retry can help
            abort.set()
            raise TeacherError(self._scrub(f"{self.url}: {type(exc).__name__}: {exc}")) from None
        acct.add("produced")
        acct.add_tokens(usage["prompt_tokens"], usage["completion_tokens"])
        if key is not None:
            self.cache.put(key, {"text": text, **usage})
        return text

    def _body(self, prompt: str) -> dict[str, Any]:
        cfg = self.cfg
        return self.dialect.body(Request(cfg.model, prompt, cfg.temperature, cfg.max_new_tokens))

    def _attempt(self, body: dict[str, Any]) -> tuple[str, dict]:
        if not self.accounting.reserve():
            raise _BudgetExhausted
        session = self._borrow()
        try:
            resp = session.post(self._url, json=body, timeout=self.cfg.timeout_s)
        finally:
            self._sessions.put(session)
        if resp.status_code == 429 or resp.status_code >= 500:
            detail = self._scrub(_error_text(resp, self.dialect))
            raise _RetryableStatus(resp.status_code, detail, retry_after_s(resp))
        if not resp.ok:
            # a bad request stays bad: retrying would only hide the configuration error
            detail = f"HTTP {resp.status_code}: {_error_text(resp, self.dialect)}"
            raise TeacherError(self._scrub(f"{self.url} rejected the request with {detail}"))
        return _completion(resp, self.dialect)

    def _borrow(self) -> requests.Session:
        try:
            return self._sessions.get_nowait()
        except queue.Empty:
            pass
        session = requests.Session()  # keep-alive: one connection per worker for the whole stage
        session.headers.update(self.dialect.headers(self._api_key))
        with self._sessions_lock:
            self._all_sessions.append(session)
        return session

    # ---- tenacity hooks ------------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableStatus) and error.retry_after is not None:
            return min(error.retry_after, MAX_DELAY_S)
        return BACKOFF(state)

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.cfg.max_retries + 1:
            return True
        return self.accounting.out_of_time_after(state.upcoming_sleep)  # no point waiting past the budget

    def _before_sleep(self, state: RetryCallState) -> None:
        self.accounting.add("retries")
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            self._scrub(
                f"teacher request to {self.url} failed ({type(error).__name__}: {error}); "
                f"retry {state.attempt_number}/{self.cfg.max_retries} in {state.upcoming_sleep:.1f}s"
            )
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
