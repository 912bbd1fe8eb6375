"""What every section of the schema shares: `Section` (unknown keys forbidden, frozen), `one_of` (a name
checked against a registry) and the small validation helpers several sections use."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

PACKAGE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # an importable (dotted) package name
# a precision setting (train, evaluate, the local teacher): auto takes bf16 where the device computes it
# natively, fp32 elsewhere (tasks/common/models.py resolve_precision)
Precision = Literal["auto", "fp32", "fp16", "bf16"]
_LISTED = 12  # registries up to this size are listed in full in an error, even when a close name is found


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def quoted_or(names: Iterable[str]) -> str:
    """'a', 'b' or 'c'."""
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def one_of(value: str, names: Iterable[str], key: str, what: str) -> str:
    """`value` when it is one of a registry's `names` (in the registry's order), else a ValueError: `what`
    it is not, the closest names (those starting with what was typed, then difflib's spelling neighbours)
    and, for a short registry or when nothing is close, every name, with the `key` to set."""
    names = tuple(names)
    if value in names:
        return value
    prefixed = sorted((name for name in names if name.startswith(value)), key=lambda name: (len(name), name))
    close = list(dict.fromkeys([*prefixed, *difflib.get_close_matches(value, names, n=3, cutoff=0.6)]))[:3]
    message = f"not {what}; did you mean {', '.join(map(repr, close))}?" if close else f"not {what};"
    if not close or len(names) <= _LISTED:
        raise ValueError(f"{message} {key} must be {quoted_or(names)}")
    raise ValueError(f"{message} ({key})")


def check_regexes(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return value
