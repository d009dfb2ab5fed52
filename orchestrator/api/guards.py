"""Request size and rate limits."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from orchestrator.api.errors import ApiError

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
    Content-Length says so or it streams past it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0
        refused = False

        async def counted() -> dict[str, Any]:
            nonlocal seen, refused
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict[str, Any]) -> None:
            if not refused:  # once refused, what the app still says goes nowhere
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise

    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"error": {"code": "PayloadTooLarge", "message": self._message(), "details": {}}}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
