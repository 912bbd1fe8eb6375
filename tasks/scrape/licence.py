"""Which licence a source is under, where it can be known: a distribution's metadata or a LICENSE file.

Recorded per record as provenance, so that a later filter can keep only permissively licensed code; a text
we do not recognise is named by its file ("see LICENSE") rather than guessed.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt")
MAX_LICENCE_BYTES = 200_000
# (SPDX id, a phrase only that licence's text holds); order matters: BSD-3 text contains BSD-2's phrase
SIGNATURES = (
    ("Apache-2.0", r"Apache License,?\s+Version 2\.0"),
    ("MIT", r"Permission is hereby granted, free of charge"),
    ("BSD-3-Clause", r"Neither the name of"),
    ("BSD-2-Clause", r"Redistribution and use in source and binary forms"),
    ("LGPL-3.0", r"GNU LESSER GENERAL PUBLIC LICENSE\s+Version 3"),
    ("LGPL-2.1", r"GNU LESSER GENERAL PUBLIC LICENSE\s+Version 2\.1"),
    ("GPL-3.0", r"GNU GENERAL PUBLIC LICENSE\s+Version 3"),
    ("GPL-2.0", r"GNU GENERAL PUBLIC LICENSE\s+Version 2"),
    ("MPL-2.0", r"Mozilla Public License,?\s+(Version|v\.?) ?2\.0"),
    ("ISC", r"Permission to use, copy, modify, and/or distribute this software for any purpose"),
    ("Unlicense", r"This is free and unencumbered software released into the public domain"),
)


def identify(text: str) -> str | None:
    for spdx, phrase in SIGNATURES:
        if re.search(phrase, text, re.I):
            return spdx
    return None


def distribution_licence(dist: str) -> str | None:
    """License-Expression (PEP 639), else a short License field, else the trove classifier."""
    try:
        meta = importlib.metadata.metadata(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    if expression := meta.get("License-Expression"):
        return expression
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and len(field) < 100:  # some put the whole licence text here
        return field
    if field:
        return identify(field) or "see the distribution's License field"
    classifiers = [
        c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    return classifiers[0] if classifiers else None


def folder_licence(folder: Path, stop: Path | None = None) -> str | None:
    """The licence file in `folder` or its parents up to `stop` (a checkout's root), identified if we can."""
    folder = folder.resolve()
    for candidate in (folder, *folder.parents):
        for name in LICENCE_FILES:
            path = candidate / name
            if path.is_file():
                text = path.read_bytes()[:MAX_LICENCE_BYTES].decode("utf-8", "replace")
                return identify(text) or f"see {path.name}"
        if stop is None or candidate == stop.resolve():
            break
    return None
