"""The resolved config as it may be shown: `public_dump(cfg)` is what every consumer that logs or stores a
config (MLflow params, the run summary, a registered model's metadata and card) must use instead of
`cfg.model_dump()`.

Credentials never belong in a config (an API key is read from the environment variable the config names),
but a URL can carry them: `http://user:password@host/v1`, `?api_key=...`. Every URL-valued string is
shown through `redact_url`, the one redaction of the project (the teacher's log lines use it too). Stage
keys still hash the real config: the content address must change when the endpoint does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL with any user:password@ and query replaced by ***: safe for logs and messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, REDACTED if parts.query else "", ""))


def _looks_like_url(text: str) -> bool:
    try:
        parts = urlsplit(text.strip())
    except ValueError:  # an invalid IPv6 host: not a URL this config could use anyway
        return False
    return bool(parts.scheme and parts.netloc) and "://" in text


def redact_value(value: Any) -> Any:
    """`value` with every URL in it (nested in dicts and lists too) redacted; other values unchanged."""
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str) and _looks_like_url(value):
        return redact_url(value)
    return value


def public_dump(cfg) -> dict:
    """`cfg.model_dump(mode="json")` with every URL credential replaced by ***."""
    return redact_value(cfg.model_dump(mode="json"))
