"""The wire formats a remote teacher can speak, one module each: every module in this folder is a dialect
named after its file, holding `DIALECT` (a `Dialect`). The transport that sends them -- retries, budgets,
the call cache, concurrency, secret scrubbing -- is written once (tasks/common/teacher/remote.py). A new
API is one module here plus its test: the config accepts its name (pipeline_config/schema/ lists this
folder) and the synthesize stage gives it the `teacher` concurrency slot, as every remote teacher.

Standard library only, and no import of the config: the schema reads `names()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Protocol


class BadResponse(Exception):
    """A 2xx whose body is not a completion in this dialect (garbage JSON, another API's shape)."""


@dataclass(frozen=True)
class Request:
    """What a dialect is asked to send: one user turn."""

    model: str
    prompt: str
    temperature: float
    max_new_tokens: int


class Dialect(Protocol):
    path: str  # appended to teacher.base_url
    key_env: str  # where the API key is read from unless teacher.api_key_env names another variable

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def body(self, request: Request) -> dict[str, Any]: ...

    def completion(self, data: Any) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) of a 2xx body; BadResponse if it is not one."""
        ...

    def error_message(self, data: Any) -> str | None:
        """The server's own explanation in an error body, if it has the dialect's shape."""
        ...


def names() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def load(name: str) -> Dialect:
    if name not in names():
        raise ValueError(f"no teacher dialect {name!r}; known: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}").DIALECT


def tokens(usage: Any, prompt_key: str, completion_key: str) -> tuple[int, int]:
    """Token counts from a usage block, 0 where a server leaves one out."""
    usage = usage if isinstance(usage, dict) else {}
    return tuple(usage.get(k) if isinstance(usage.get(k), int) else 0 for k in (prompt_key, completion_key))
