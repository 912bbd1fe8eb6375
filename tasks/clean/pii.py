"""PII and secrets are redacted, not dropped (BigCode's practice for code): the row keeps its value as
training data and loses the address, key or token, replaced by a placeholder a model can learn to write.

Public IP addresses only: private, loopback and reserved ones (10.0.0.1, 127.0.0.1, 0.0.0.0) are
configuration examples, not someone's machine, and version strings that look like addresses
(1.2.3.4) are not touched unless every part is a valid octet and the address is public, which the
`ipaddress` check decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
SECRET_PATTERNS = (
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),  # OpenAI-style keys
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face tokens
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API keys
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
)
# `api_key = "..."`, `password: '...'`: the quoted value when it looks like a credential (no spaces, 12+
# characters, letters and digits), so `token = "<pad>"` or `password = "your password"` stay
KEYED_SECRET = re.compile(
    r"""(?i)(\b[\w-]*(?:api[_-]?key|secret|token|passw(?:or)?d|access[_-]?key)[\w-]*["']?\s*[:=]\s*)"""
    r"""(["'])([^"'\s]{12,})\2"""
)
# Cheap tests that rule a pattern out for most rows: the full patterns are slow to scan with (they can
# start at any word), the guards are literal-ish
IPV4_GUARD = re.compile(r"\d\.\d{1,3}\.\d")
IPV6_GUARD = re.compile(r"::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:")
SECRET_GUARD = re.compile(r"AKIA|gh[pousr]_|github_pat_|sk-|hf_|xox[abprs]-|AIza|PRIVATE KEY")
KEYED_GUARD = re.compile(r"api.?key|secret|token|passw|access.?key")  # on the lower-cased text: (?i) is slow
ANY_GUARD = re.compile("|".join(["@", IPV4_GUARD.pattern, IPV6_GUARD.pattern, SECRET_GUARD.pattern]))
PLACEHOLDERS = {"email": "<EMAIL>", "ip_address": "<IP_ADDRESS>", "secret": "<SECRET>"}
FIELDS = ("instruction", "input", "output")


def _public_ip(text: str) -> bool:
    if ":" in text and sum(1 for group in text.split(":") if group) < 3:
        return False  # numpy slices (`a[2::-1]`, `x[1::2]`) read as IPv6 addresses such as "2::"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_global


def _sub_ip(pattern: re.Pattern, text: str, counts: Counter) -> str:
    def replace(match: re.Match) -> str:
        if not _public_ip(match[0]):
            return match[0]
        counts["ip_address"] += 1
        return PLACEHOLDERS["ip_address"]

    return pattern.sub(replace, text)


def redact_text(text: str, counts: Counter) -> str:
    if not ANY_GUARD.search(text) and not KEYED_GUARD.search(text.lower()):
        return text  # most rows: one scan instead of five
    if "@" in text:
        text, n = EMAIL.subn(PLACEHOLDERS["email"], text)
        counts["email"] += n
    if IPV4_GUARD.search(text):
        text = _sub_ip(IPV4, text, counts)
    if IPV6_GUARD.search(text):
        text = _sub_ip(IPV6, text, counts)
    if SECRET_GUARD.search(text):
        for pattern in SECRET_PATTERNS:
            text, n = pattern.subn(PLACEHOLDERS["secret"], text)
            counts["secret"] += n
    if not KEYED_GUARD.search(text.lower()):
        return text

    def keyed(match: re.Match) -> str:
        value = match[3]
        if not (re.search(r"\d", value) and re.search(r"[A-Za-z]", value)):
            return match[0]
        counts["secret"] += 1
        return f"{match[1]}{match[2]}{PLACEHOLDERS['secret']}{match[2]}"

    return KEYED_SECRET.sub(keyed, text)


def redact(row: dict) -> tuple[dict, Counter]:
    """The row with PII replaced in its text fields, and how many of each kind were replaced. A chat row's
    turns are redacted, and its instruction and output (its first user and last assistant turn) follow."""
    counts: Counter = Counter()
    changed = {}
    if row.get("messages"):
        messages = [{**m, "content": redact_text(m["content"], counts)} for m in row["messages"]]
        if +counts:
            changed = {
                "messages": messages,
                "instruction": next(m["content"] for m in messages if m["role"] == "user"),
                "output": messages[-1]["content"],
            }
    for name in () if row.get("messages") else FIELDS:
        text = row.get(name) or ""
        new = redact_text(text, counts)
        if new != text:
            changed[name] = new
    counts = +counts  # zero counts out
    if not changed:
        return row, counts
    metadata = {**(row.get("metadata") or {}), "pii_redacted": dict(counts)}
    return {**row, **changed, "metadata": metadata}, counts
