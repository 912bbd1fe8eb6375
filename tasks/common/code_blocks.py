"""Code in model text: the one fenced-block parser of the project (synthesis reads a teacher's answer with
it, clean checks every block it finds) and the parse check both use.

A fence opens with ``` (optionally indented, optionally followed by a language tag) at the start of a line
and closes with ``` at the start of a line; a fence that never closes runs to the end of the text, which is
how a teacher's answer cut by its token limit looks. Blocks tagged with another language (```bash,
```text) are not Python and are not parse-checked.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})


@dataclass(frozen=True)
class Block:
    language: str  # lower-cased tag, "" when the fence has none
    code: str

    @property
    def is_python(self) -> bool:
        return self.language in PYTHON_TAGS


def fenced_blocks(text: str) -> list[Block]:
    return [Block(m[1].lower(), m[2]) for m in FENCE.finditer(text)]


def python_code(text: str) -> list[str]:
    """The Python blocks of a text that has fences; the whole text when it has none (a bare code answer)."""
    blocks = fenced_blocks(text)
    if not blocks:
        return [text]
    return [b.code for b in blocks if b.is_python]


def closes_a_block(text: str) -> bool:
    """Whether a fenced block has opened and closed: an asked model's answer is complete for execution
    there (what follows is prose), so generation may stop."""
    return sum(line.lstrip().startswith("```") for line in text.split("\n")) >= 2


def first_python_block(text: str) -> str:
    """The first Python block, else the whole text: what a model's answer to "write a function" holds."""
    return next(iter(python_code(text)), text)


def parse(code: str) -> ast.Module | None:
    """The module's tree, or None when it is not valid Python (of this interpreter)."""
    with warnings.catch_warnings():  # invalid escape sequences only warn; the code still parses
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: null bytes
            return None
