"""What every request handler shares: settings, the database pool, token store, rate
limiter, and the Temporal client (connected on first use, so the API starts, and answers
what it can, while Temporal is still coming up)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from temporalio.client import Client

from infra.settings import Settings
from orchestrator.api.guards import RateLimiter
from registry.tokens import Token, TokenStore
from registry.versions import Catalog


@dataclass
class ApiContext:
    settings: Settings
    pool: asyncpg.Pool
    tokens: TokenStore
    limiter: RateLimiter
    _temporal: Client | None = None
    _nats: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def temporal(self) -> Client:
        async with self._lock:
            if self._temporal is None:
                from orchestrator.runs import connect_temporal

                self._temporal = await connect_temporal(self.settings)
            return self._temporal

    async def nats(self) -> Any:
        async with self._lock:
            if self._nats is None or self._nats.is_closed:
                import nats

                from infra.stack import addresses

                self._nats = await nats.connect(addresses(self.settings).nats, name="reflux-api")
            return self._nats

    async def close(self) -> None:
        if self._nats is not None and not self._nats.is_closed:
            await self._nats.drain()

    async def catalog(self) -> Catalog:
        from registry.nodes import NodeRegistry

        return await NodeRegistry(self.pool, self.settings.user).catalog()


def ctx_of(request: Any) -> ApiContext:
    """The context of the app serving `request`."""
    return request.app.state.ctx  # type: ignore[no-any-return]


def actor(token: Token) -> str:
    """How registry changes and runs record an API caller."""
    return f"token:{token.name or token.id}"
