"""Keep secrets out of traces: values under sensitive keys, and known secret values wherever
they appear, are replaced at any depth before an event leaves the process.

A key is sensitive when one of its words is (password, token, secret, authorization,
cookie, …) or two adjacent words make one (api key, private key, access key). Words come
from snake_case, kebab-case, dotted and camelCase keys, so `X-Api-Key`, `client_secret`
and `accessToken` are caught while `tokens_used` or `cost_tokens` are not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
MAX_DEPTH = 32

SENSITIVE_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "token",
        "secret",
        "authorization",
        "cookie",
        "apikey",
        "credential",
        "credentials",
        "signature",
    }
)
SENSITIVE_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}
)

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def words(key: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(key)]


def is_sensitive(key: str) -> bool:
    parts = words(key)
    if any(w in SENSITIVE_WORDS for w in parts):
        return True
    return any(pair in SENSITIVE_PAIRS for pair in zip(parts, parts[1:], strict=False))


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of `value` with sensitive keys' values and every occurrence of a secret
    (strings of 4+ characters; shorter ones would blank out ordinary text) replaced."""
    known = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    return _redact(value, known, 0)


def _redact(value: Any, secrets: list[str], depth: int) -> Any:
    if depth > MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        return {
            key: REDACTED if is_sensitive(str(key)) else _redact(item, secrets, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item, secrets, depth + 1) for item in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    return value
