"""The CLI against a remote platform: with `REFLUX_API_URL` (and `REFLUX_TOKEN`) set,
`workflows push|list|show`, `run`, `stats` and `traces` go through the HTTP API, with no
access to Temporal, NATS or PostgreSQL. API errors become the CLI's usual errors (exit 2
for an invalid workflow or input, 1 otherwise) with the API's message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from infra import NotFoundError, RefluxError, ServiceError, Settings, SpecError

__all__ = ["Remote", "remote"]


class ApiRefusal(RefluxError):
    """The API said no (a role, a namespace, a limit, a conflict)."""


def remote(settings: Settings) -> Remote | None:
    return Remote(settings) if settings.api.url else None


class Remote:
    def __init__(self, settings: Settings) -> None:
        assert settings.api.url
        headers = {"Authorization": f"Bearer {settings.api.token}"} if settings.api.token else {}
        self.url = settings.api.url.rstrip("/")
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60)

    async def __aenter__(self) -> Remote:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the API at {self.url}: {exc}") from None
        if response.is_success:
            return response.json()
        raise _error(response)

    async def events(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        """A run's events from `GET /runs/{id}/events` until `run.finished`."""
        async with self.client.stream("GET", f"/runs/{run_id}/events", timeout=None) as response:
            if not response.is_success:
                await response.aread()
                raise _error(response)
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[len("data: ") :])


def _error(response: httpx.Response) -> RefluxError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "Error", response.text[:200]
    if code == "SpecError":
        return SpecError(list(error.get("details", {}).get("problems") or [message]))
    if code == "InvalidRequest":
        return SpecError([message])
    if code == "NotFound":
        return NotFoundError(message)
    if response.status_code >= 500:
        return ServiceError(f"the API failed ({response.status_code} {code}): {message}")
    return ApiRefusal(f"{code}: {message}")
