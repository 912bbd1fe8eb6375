"""Docstring back-translation pairs (no teacher), as in the starcoderbase-1b scikit-learn FIM recipe: the
docstring's summary is the instruction, the signature the input, the code without its docstring the output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

SUMMARY_MAX_CHARS = 600


def pair(instruction: str, input_text: str, output: str, source: str, **metadata) -> dict:
    digest = hashlib.sha1(f"{instruction}\x00{input_text}\x00{output}".encode()).hexdigest()[:16]
    return {
        "id": f"{source}-{digest}",
        "instruction": instruction,
        "input": input_text,
        "output": output,
        "source": source,
        "metadata": metadata,
    }


def docstring_summary(docstring: str) -> str:
    """The docstring's first paragraph: numpydoc sections (Parameters, Returns...) follow a blank line."""
    first = docstring.strip().split("\n\n", 1)[0]
    return " ".join(first.split())[:SUMMARY_MAX_CHARS]


def docstring_pairs(records: list[dict], limit: int | None) -> Iterator[dict]:
    n = 0
    for rec in records:
        summary = docstring_summary(rec["docstring"])
        if not summary:
            continue
        kind = "class" if rec["kind"] == "class" else "function"
        instruction = f"Write a Python {kind} `{rec['name'].rsplit('.', 1)[-1]}`: {summary}"
        yield pair(
            instruction,
            rec["signature"],
            rec["code_without_docstring"],
            "docstring",
            mode="docstring",
            verified=None,  # no tests to run: the code is the library's own, not a teacher's
            verification="unverified",
            qualname=rec["name"],
            path=rec["path"],
            lines=[rec["line_start"], rec["line_end"]],
            package_version=rec["package_version"],
        )
        n += 1
        if limit and n >= limit:
            return
