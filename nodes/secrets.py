"""`secret('NAME')` at call time: where it may appear, where the value comes from, and the
mask on everything that leaves.

A template's `secret('NAME')` renders to a placeholder, `${secret:NAME:NONCE}` with the
run's own random nonce (see `orchestrator.expressions`), so values never enter Temporal
history, traces, the step cache key or logs. The node service swaps in the values just
before the handler runs, and only:
- for placeholders that carry the run's nonce, so a placeholder that arrives as data (an
  input, a response) cannot ask for a secret: data cannot know the nonce;
- in the params its node marks as secret-bearing (`secret_params` in the manifest: e.g.
  http.request's headers and auth; `query` ones, like its url, only after the `?`). A
  placeholder anywhere else stays as it is: data that happens to look like one is data;
- for names the step's templates name (`NodeRequest.secrets`), so a value that arrives as
  data (an input, a response) cannot ask for another secret;
- from the run's namespace in the secret store (the default namespace also reads
  `REFLUX_SECRET_NAME` from the environment).
Every resolved value is then masked (`[secret:NAME]`) in the output, the error and its
details before the reply is sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from infra import SecretError, ValidationError, environment_variable

__all__ = [
    "PLACEHOLDER",
    "SecretLookup",
    "SecretResolver",
    "canonical_placeholders",
    "placeholder",
    "placeholder_names",
]

PLACEHOLDER = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)(?::([0-9a-f]{8,64}))?\}")
"""`${secret:NAME}` or `${secret:NAME:NONCE}`."""

SecretLookup = Callable[[str, str], Awaitable[str | None]]
"""(namespace, name) -> the value, or None when unset."""


def placeholder(name: str, nonce: str | None = None) -> str:
    """What `secret('NAME')` renders to in a run whose nonce is `nonce`."""
    return f"${{secret:{name}:{nonce}}}" if nonce else f"${{secret:{name}}}"


def placeholder_names(value: Any, nonce: str | None = None) -> set[str]:
    """Names of the placeholders in `value` that carry `nonce` (None: that carry none)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "${secret:" in item:
                found.update(n for n, tag in PLACEHOLDER.findall(item) if (tag or None) == nonce)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


class SecretResolver:
    """Resolves the placeholders of one call; values are cached for `ttl` seconds."""

    def __init__(self, lookup: SecretLookup, ttl: float = 5.0) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}

    async def resolve(
        self,
        params: dict[str, Any],
        *,
        namespace: str,
        secret_params: Mapping[str, str],
        allowed: Iterable[str] | None,
        node: str,
        nonce: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(params with values swapped in, {name: value} of what was resolved)."""
        wanted = {
            key: placeholder_names(params[key], nonce) for key in secret_params if key in params
        }
        names = set().union(*wanted.values()) if wanted else set()
        if allowed is not None:
            names &= set(allowed)
        if not names:
            return params, {}
        values: dict[str, str] = {}
        for name in sorted(names):
            found = await self._value(namespace, name)
            if found is None:
                where = (
                    f" or {environment_variable('secret', name)}" if namespace == "default" else ""
                )
                raise ValidationError(
                    f"secret '{name}' is not set in namespace '{namespace}'"
                    f" (reflux secrets set {name} --namespace {namespace}{where})"
                )
            values[name] = found
        resolved = dict(params)
        for key, kind in secret_params.items():
            if key in params and wanted.get(key):
                where = f"{node}: with.{key}"
                resolved[key] = _swap(params[key], values, nonce, kind, where)
        return resolved, values

    async def _value(self, namespace: str, name: str) -> str | None:
        now = time.monotonic()
        cached = self._cache.get((namespace, name))
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            value = await self._lookup(namespace, name)
        except SecretError:
            raise
        except Exception as exc:  # the store is unreachable: worth a retry
            raise SecretError(f"the secret store did not answer: {type(exc).__name__}") from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(namespace, name)] = (now, value)
        return value


def _swap(value: Any, values: Mapping[str, str], nonce: str | None, kind: str, where: str) -> Any:
    if isinstance(value, str):
        if "${secret:" not in value:
            return value

        def ours(m: re.Match[str]) -> bool:
            return (m.group(2) or None) == nonce and m.group(1) in values

        if kind == "query":
            head = value.partition("?")[0]
            if any(ours(m) for m in PLACEHOLDER.finditer(head)):
                raise ValidationError(f"{where}: secret() may be used only in the query string")
        return PLACEHOLDER.sub(lambda m: values[m.group(1)] if ours(m) else m.group(0), value)
    if isinstance(value, dict):
        return {k: _swap(v, values, nonce, kind, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, values, nonce, kind, where) for v in value]
    return value


def canonical_placeholders(value: Any) -> Any:
    """`value` with every placeholder's nonce dropped: how the cache and traces key a call,
    the same in every run."""
    if isinstance(value, str):
        if "${secret:" not in value:
            return value
        return PLACEHOLDER.sub(lambda m: "${secret:" + m.group(1) + "}", value)
    if isinstance(value, dict):
        return {k: canonical_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical_placeholders(v) for v in value]
    return value
