"""Keep secrets out of whatever leaves a process: values under sensitive keys, and known
secret values wherever they appear, are replaced at any depth.

`redact` blanks sensitive keys (traces, errors, the API's step views). `Masker` replaces
each resolved secret value with `[secret:NAME]` in everything a node service sends back:
the value itself and the forms it commonly takes on the way out (URL-encoded, JSON-escaped,
base64 on its own or inside a longer base64 text, as in `Basic base64(user:pass)`, with
its whitespace collapsed, as an HTTP client puts it in a URL's query), numbers that spell
one, and a value's start left at the end of a text that was cut short. Values shorter than
4 characters are not hunted: they would blank out ordinary text.

A key is sensitive when one of its words is (password, token, secret, authorization,
cookie, …) or two adjacent words make one (api key, private key, access key). Words come
from snake_case, kebab-case, dotted and camelCase keys, so `X-Api-Key`, `client_secret`
and `accessToken` are caught while `tokens_used` or `cost_tokens` are not.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "Masker", "is_sensitive", "redact"]

REDACTED = "[redacted]"
MAX_DEPTH = 32
MIN_SECRET = 4
MIN_CUT = 8
"""A value's first this-many characters or more, at the end of a text, count as the value."""

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
    known = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
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


class Masker:
    """Replaces known secret values, by name, at any depth (dict keys included)."""

    def __init__(self, named: Mapping[str, str]) -> None:
        forms: dict[str, str] = {}
        self._starts: list[tuple[str, str]] = []
        for name, value in named.items():
            if len(value) < MIN_SECRET:
                continue
            for form in _forms(value):
                forms.setdefault(form, f"[secret:{name}]")
            if len(value) > MIN_CUT:
                self._starts.append((value, f"[secret:{name}]"))
        self._forms = sorted(forms.items(), key=lambda item: len(item[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def text(self, value: str) -> str:
        for form, label in self._forms:
            if form in value:
                value = value.replace(form, label)
        for secret, label in self._starts:  # a text cut short (an excerpt, an output cap)
            tail = value.rstrip("…. \n")
            for size in range(len(secret) - 1, MIN_CUT - 1, -1):
                if tail.endswith(secret[:size]):
                    value = tail[:-size] + label + value[len(tail) :]
                    break
        return value

    def __call__(self, value: Any) -> Any:
        if not self._forms:
            return value
        return self._mask(value, 0)

    def _mask(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            spelled = str(value)
            masked = self.text(spelled)
            return value if masked == spelled else masked
        if depth > MAX_DEPTH * 8:  # far deeper than any value we build; never recurse forever
            return "[too deep]"
        if isinstance(value, dict):
            return {self._mask(k, depth): self._mask(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._mask(item, depth + 1) for item in value]
        return value


def _forms(value: str) -> set[str]:
    import httpx

    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value), quote(value)}
    forms.add(" ".join(value.split()))
    try:
        forms.add(httpx.URL("http://h/?" + value).query.decode())
    except httpx.InvalidURL:  # a value no URL can hold raw is not in one
        pass
    forms.add(str(httpx.QueryParams({"k": value}))[2:])
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms.update({whole, whole.rstrip("=")})
        # Inside a longer base64 text the value starts at one of three bit offsets; keep
        # the characters that depend on the value's bytes alone.
        for offset in (1, 2):
            shifted = encode(b"\0" * offset + raw).decode()
            start = (offset * 8 + 5) // 6
            end = (offset + len(raw)) * 8 // 6
            if end - start >= 8:
                forms.add(shifted[start:end])
        if len(whole) >= 8:
            forms.add(whole[: len(raw) * 8 // 6])
    return {form for form in forms if len(form) >= MIN_SECRET}
