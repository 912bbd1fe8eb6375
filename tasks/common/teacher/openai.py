"""OpenAI-compatible `/chat/completions` teacher (vLLM, Ollama, TGI, llama.cpp server, the OpenAI API).

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
- The API key comes from the environment variable the config names. Neither it nor a password embedded in
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


class _BadResponse(Exception):
    """A 2xx whose body is not a chat completion (garbage JSON, another API's shape)."""


class _BudgetExhausted(Exception):
    pass


_RETRYABLE = (*TRANSIENT, _RetryableStatus)


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, _RetryableStatus):
        return f"http_{exc.status}"
    if isinstance(exc, _BadResponse):
        return "bad_response"
    if isinstance(exc, requests.Timeout):  # before ConnectionError: ConnectTimeout is both
        return "timeout"
    return "connection"


def _error_text(resp: requests.Response) -> str:
    """The server's own explanation: OpenAI's {"error": {"message": ...}} when present, else the raw body."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:MAX_ERROR_CHARS]
        if isinstance(err, str) and err:
            return err[:MAX_ERROR_CHARS]
    return (resp.text or resp.reason or "").strip()[:MAX_ERROR_CHARS]


def _completion(resp: requests.Response) -> tuple[str, dict]:
    """(text, usage) of a chat completion; usage holds prompt_tokens / completion_tokens, 0 when absent."""
    try:
        data = resp.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _BadResponse(f"unexpected response ({exc!r}): {resp.text[:MAX_ERROR_CHARS]}") from None
    if content is not None and not isinstance(content, str):
        raise _BadResponse(f"content is {type(content).__name__}, not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = {
        k: usage.get(k) if isinstance(usage.get(k), int) else 0
        for k in ("prompt_tokens", "completion_tokens")
    }
    return content or "", tokens  # some servers send null content for an empty completion


class OpenAITeacher:
    """Chat completions from an OpenAI-compatible server: one request per prompt, N in flight, retried."""

    def __init__(
        self,
        cfg: TeacherConfig,
        cache: CallCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not cfg.base_url:
            raise ValueError("OpenAITeacher needs teacher.base_url")
        self.cfg, self.cache = cfg, cache
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"  # may hold user:password: never shown
        self.url = redact_url(self._url)
        self.accounting = Accounting(cfg, clock)
        self._sleep = sleep
        self._asked: Counter = Counter()  # how often each prompt was asked: the n-th sample's cache key
        self._sessions: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
        self._all_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        # held only in the sessions' headers and here, for scrubbing; never logged or put in a message
        self._api_key = os.environ.get(cfg.api_key_env) or None
        self._secrets = [self._api_key] if self._api_key else []
        parts = urlsplit(cfg.base_url)
        if parts.password and self._api_key:
            # one Authorization header per request: requests would send the URL's Basic auth and drop the key
            raise ValueError(
                f"teacher.base_url ({redact_url(cfg.base_url)}) carries a user:password and "
                f"${cfg.api_key_env} (teacher.api_key_env) holds an API key, but a request has one "
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
        return f"OpenAITeacher(url={self.url!r}, model={self.cfg.model!r})"

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
            backend="openai",
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
        except (*_RETRYABLE, _BadResponse) as exc:
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
        return {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_new_tokens,
        }

    def _attempt(self, body: dict[str, Any]) -> tuple[str, dict]:
        if not self.accounting.reserve():
            raise _BudgetExhausted
        session = self._borrow()
        try:
            resp = session.post(self._url, json=body, timeout=self.cfg.timeout_s)
        finally:
            self._sessions.put(session)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _RetryableStatus(resp.status_code, self._scrub(_error_text(resp)), retry_after_s(resp))
        if not resp.ok:
            # a bad request stays bad: retrying would only hide the configuration error
            detail = f"HTTP {resp.status_code}: {_error_text(resp)}"
            raise TeacherError(self._scrub(f"{self.url} rejected the request with {detail}"))
        return _completion(resp)

    def _borrow(self) -> requests.Session:
        try:
            return self._sessions.get_nowait()
        except queue.Empty:
            pass
        session = requests.Session()  # keep-alive: one connection per worker for the whole stage
        if self._api_key:
            session.headers["Authorization"] = f"Bearer {self._api_key}"
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
