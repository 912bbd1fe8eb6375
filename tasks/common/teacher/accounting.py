"""What a teacher did and what it may still do: counts for the stage report and the budget caps.

Both backends share one `Accounting`. Worker threads reserve each request under its lock before sending
it, so `max_requests` is never exceeded however many requests are in flight; `max_tokens` is checked
against the tokens counted so far (calls already in flight may finish past it); `max_seconds` runs from the
teacher's first call. A cap is only reported in `stopped` once it has actually refused a request: a run
that needed exactly `max_requests` requests did not stop.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pipeline_config.schema import TeacherConfig

CAPS = ("max_requests", "max_tokens", "max_seconds")


class Accounting:
    def __init__(self, cfg: TeacherConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.caps = {name: getattr(cfg, name) for name in CAPS}
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self.counts: Counter = Counter()  # prompts, cache_hits, produced, requests, retries, skipped, tokens
        self.failures: Counter = Counter()  # prompts given up on, per kind (http_503, timeout, ...)
        self.seconds = 0.0
        self.stopped: str | None = None  # the cap that refused a request

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def fail(self, kind: str) -> None:
        with self._lock:
            self.failures[kind] += 1

    def add_tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.counts["prompt_tokens"] += prompt
            self.counts["completion_tokens"] += completion

    def elapsed(self) -> float:
        return 0.0 if self._started is None else self._clock() - self._started

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Around one `generate` call: starts the max_seconds clock and adds to `seconds`."""
        start = self._clock()
        if self._started is None:
            self._started = start
        try:
            yield
        finally:
            self.seconds += self._clock() - start

    def reserve(self, n: int = 1) -> bool:
        """Count n requests about to be sent; False (and `stopped` set) when a cap forbids them."""
        with self._lock:
            if self.stopped is None:
                self.stopped = self._cap_reached(n)
            if self.stopped is not None:
                return False
            self.counts["requests"] += n
            return True

    def out_of_time_after(self, delay: float) -> bool:
        """Whether waiting `delay` seconds (a retry's backoff) would end past max_seconds; stops if so."""
        limit = self.caps["max_seconds"]
        if limit is None or self.elapsed() + delay < limit:
            return False
        with self._lock:
            self.stopped = self.stopped or "max_seconds"
        return True

    def _cap_reached(self, n: int) -> str | None:
        caps, counts = self.caps, self.counts
        if caps["max_requests"] is not None and counts["requests"] + n > caps["max_requests"]:
            return "max_requests"
        tokens = counts["prompt_tokens"] + counts["completion_tokens"]
        if caps["max_tokens"] is not None and tokens >= caps["max_tokens"]:
            return "max_tokens"
        if caps["max_seconds"] is not None and self.elapsed() >= caps["max_seconds"]:
            return "max_seconds"
        return None

    def stats(self) -> dict:
        """For the stage report. prompts = cache_hits + produced + failed + skipped."""
        with self._lock:
            c = self.counts
            return {
                "prompts": c["prompts"],
                "cache_hits": c["cache_hits"],  # answered from the on-disk cache: no request
                "produced": c["produced"],  # answered by the model in this run
                "failed": sum(self.failures.values()),  # given up on after retries: None
                "failures": dict(sorted(self.failures.items())),
                "skipped": c["skipped"],  # never asked: a cap was reached (or the call was aborted): None
                "requests": c["requests"],  # sent, retries included (local: completions generated)
                "retries": c["retries"],
                "prompt_tokens": c["prompt_tokens"],
                "completion_tokens": c["completion_tokens"],
                "seconds": round(self.seconds, 3),
                "stopped": self.stopped,  # None, or the cap that stopped the teacher
                "caps": {k: v for k, v in self.caps.items() if v is not None},
            }
