"""Fill-in-the-Middle: StarCoder's sentinel tokens and the Prefix-Suffix-Middle reordering."""

from __future__ import annotations

import random

FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<fim_prefix>", "<fim_middle>", "<fim_suffix>"


def fim_transform(text: str, rng: random.Random) -> str:
    """Prefix-Suffix-Middle reordering at two random character cut points (StarCoder's FIM format)."""
    if len(text) < 3:
        return text
    a, b = sorted(rng.sample(range(1, len(text)), 2))
    prefix, middle, suffix = text[:a], text[a:b], text[b:]
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"
