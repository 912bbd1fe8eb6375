"""OpenAI-compatible `/chat/completions` teacher (vLLM, llama.cpp server, TGI, the OpenAI API itself).

Plain `requests` with one keep-alive session, retrying what is worth retrying: connection drops,
timeouts, 429 and 5xx (honouring a numeric Retry-After). Anything else is a configuration error and fails
at once. The API key comes from the environment variable the config names, never from YAML or logs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import requests

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher import TeacherError

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
MAX_DELAY_S = 30.0  # neither our backoff nor a server's Retry-After may stall a stage longer than this
MAX_ERROR_CHARS = 500  # server error bodies can be whole HTML pages; keep messages readable

# Connection drops (including mid-body) and timeouts are transient; anything else from requests is a bug.
_TRANSIENT_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _backoff_delay(attempt: int) -> float:
    return min(BACKOFF_BASE_S * 2**attempt, MAX_DELAY_S)


def _retry_after(resp: requests.Response) -> float | None:
    """The numeric Retry-After in seconds, capped; None if absent or an HTTP date (not worth parsing)."""
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_DELAY_S)


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


def _completion_text(resp: requests.Response, url: str) -> str:
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        body = resp.text[:MAX_ERROR_CHARS]
        raise TeacherError(f"{url}: unexpected response shape ({exc!r}): {body}") from None
    return content or ""  # some servers send null content for an empty completion


class OpenAITeacher:
    """Chat completions from an OpenAI-compatible server, one request per prompt, retried with backoff."""

    def __init__(
        self,
        cfg: TeacherConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not cfg.base_url:
            raise ValueError("OpenAITeacher needs teacher.base_url")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._session = requests.Session()  # keep-alive: one TCP connection for the whole stage
        key = os.environ.get(cfg.api_key_env)
        if key:
            # held only in the session's headers; never logged, never part of an error message
            self._session.headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:  # the default repr is harmless, but make sure no future field leaks the key
        return f"OpenAITeacher(url={self.url!r}, model={self.cfg.model!r})"

    def generate(self, prompts: list[str]) -> list[str]:
        return [self._complete(prompt) for prompt in prompts]

    def close(self) -> None:
        self._session.close()

    def _body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_new_tokens,
        }

    def _complete(self, prompt: str) -> str:
        body = self._body(prompt)
        attempts = self.cfg.max_retries + 1
        last_error = "no attempt made"
        for attempt in range(attempts):
            try:
                resp = self._session.post(self.url, json=body, timeout=self.cfg.timeout_s)
            except _TRANSIENT_EXCEPTIONS as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                delay = _backoff_delay(attempt)
            else:
                if resp.ok:
                    return _completion_text(resp, self.url)
                detail = f"HTTP {resp.status_code}: {_error_text(resp)}"
                if not _is_retryable_status(resp.status_code):
                    # a bad request stays bad: retrying would only hide the configuration error
                    raise TeacherError(f"{self.url} rejected the request with {detail}")
                last_error = detail
                server_delay = _retry_after(resp)
                delay = _backoff_delay(attempt) if server_delay is None else server_delay
            if attempt + 1 < attempts:
                log.warning(
                    "teacher request failed (%s); retry %d/%d in %.1fs",
                    last_error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                self._sleep(delay)
        raise TeacherError(
            f"{self.url}: gave up after {attempts} attempt(s); last error: {last_error}", transient=True
        )
