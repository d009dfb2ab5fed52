"""What every request handler shares: settings, the database pool, token store, rate
limiter, and the Temporal client (connected on first use, so the API starts, and answers
what it can, while Temporal is still coming up)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from temporalio.client import Client

from infra import ServiceError, Settings
from reflux.api.guards import RateLimiter
from registry import Catalog, Token, TokenStore

log = logging.getLogger("reflux.api")


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
                from orchestrator import connect_temporal

                self._temporal = await connect_temporal(self.settings)
            return self._temporal

    async def nats(self) -> Any:
        """The API's one NATS connection (opened on first use, again if it closed)."""
        async with self._lock:
            if self._nats is None or self._nats.is_closed:
                import nats

                from infra import addresses

                url = addresses(self.settings).nats
                try:
                    self._nats = await nats.connect(
                        url, name="reflux-api", connect_timeout=5, error_cb=_log_nats_error
                    )
                except Exception as exc:  # nats-py raises several types for "cannot connect"
                    raise ServiceError(f"cannot reach NATS at {url}: {exc}") from None
            return self._nats

    async def close(self) -> None:
        if self._nats is not None and not self._nats.is_closed:
            await self._nats.drain()

    async def catalog(self) -> Catalog:
        from registry import NodeRegistry

        return await NodeRegistry(self.pool, self.settings.user).catalog()


def ctx_of(request: Any) -> ApiContext:
    """The context of the app serving `request`."""
    return request.app.state.ctx  # type: ignore[no-any-return]


def actor(token: Token) -> str:
    """How registry changes and runs record an API caller."""
    return f"token:{token.name or token.id}"


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)
