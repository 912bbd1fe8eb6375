"""A setting of the running stage for code deep below it, so that the config need not be threaded through
every signature on the way (the sandbox backend for verification inside the generators' filters, the
executor for per-row work): the stage sets it for its duration, the code below reads it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

T = TypeVar("T")


class StageSetting(Generic[T]):
    def __init__(self, name: str, default: T) -> None:
        self._var: ContextVar[T] = ContextVar(name, default=default)

    def get(self) -> T:
        return self._var.get()

    @contextmanager
    def scope(self, value: T) -> Iterator[None]:
        token = self._var.set(value)
        try:
            yield
        finally:
            self._var.reset(token)
