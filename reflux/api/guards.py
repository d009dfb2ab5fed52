"""Request size, shape and rate limits.

Why the shape is checked here, on the raw bytes: Python's json and pydantic recurse, so a
body nested a few thousand levels deep fails inside FastAPI's parsing (a RecursionError: a
500) before any handler could look at it. The check counts brackets without recursing."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from infra import InputShapeError, check_text
from reflux.api.errors import ApiError

__all__ = ["BodyLimit", "RateLimiter"]


class RateLimiter:
    """A token bucket per key (a token's id, or a client address before it has one)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        """Take one request from `key`'s bucket, or raise 429 saying when to come back."""
        now = time.monotonic()
        level, then = self._buckets.get(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - then) * self.rate)
        if level < 1:
            wait = math.ceil((1 - level) / self.rate)
            self._buckets[key] = (level, now)
            raise ApiError(
                429,
                f"too many requests: at most {self.rate:g} a second (bursts of {self.burst}); "
                f"retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[key] = (level - 1, now)
        if len(self._buckets) > 100_000:  # forget idle keys now and then
            cutoff = now - self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > cutoff}


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413, whether its
    Content-Length says so or it streams past it; a body nested deeper than `max_depth` is
    refused with 422 before the app parses it.

    Every body is checked, whatever its Content-Type says: the headers may name more than one
    type, and this middleware, Starlette and FastAPI need not read the same one (a dict keeps
    the last, Starlette the first), so a check that trusted the type could be skipped by a
    request the app still parses as JSON. Counting brackets is one cheap pass; a body that
    is not JSON nests no deeper than its brackets."""

    def __init__(self, app: Any, limit: int, max_depth: int | None = None) -> None:
        self.app = app
        self.limit = limit
        if max_depth is None:
            from infra import LimitsSettings

            max_depth = LimitsSettings().input_max_depth
        self.max_depth = max_depth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:  # every Content-Length given, not one of them
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await self._refuse(send)
        return await self._checked(scope, receive, send)

    async def _checked(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Read the whole body (at most `limit` bytes), check its depth, then hand it on."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        try:
            check_text(bytes(body), self.max_depth, self.limit, "the request body")
        except InputShapeError as exc:
            return await _answer(send, 422, "InvalidRequest", str(exc))
        replayed = False

        async def again() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for a disconnect, as usual
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, again, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    async def _refuse(self, send: Any) -> None:
        await _answer(send, 413, "PayloadTooLarge", self._message())


async def _answer(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
