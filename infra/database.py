"""Connections to the platform's PostgreSQL: JSON columns as Python values, pgvector's
`vector` type once the extension exists, and connection failures as one-line ServiceErrors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from infra.errors import ServiceError
from infra.settings import Settings

CONNECT_TIMEOUT = 5.0


def database_url(settings: Settings) -> str:
    """The configured URL, else the embedded server's (recorded by `reflux up`)."""
    from infra.stack import addresses

    return addresses(settings).database


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


async def _prepare(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    if await conn.fetchval("SELECT 1 FROM pg_type WHERE typname = 'vector'"):
        from pgvector.asyncpg import register_vector

        await register_vector(conn)


def _unreachable(url: str, exc: BaseException) -> ServiceError:
    reason = str(exc) or type(exc).__name__
    return ServiceError(
        f"cannot reach PostgreSQL at {redact_url(url)}: {reason} "
        "(is `reflux up` running, or REFLUX_DATABASE_URL right?)"
    )


async def connect(url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unreachable(url, exc) from None
    await _prepare(conn)
    return conn


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_prepare, timeout=CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unreachable(url, exc) from None
    assert pool is not None
    return pool


@asynccontextmanager
async def pool_for(settings: Settings, **kwargs: Any) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the configured database, closed on exit (for commands and tests)."""
    pool = await create_pool(database_url(settings), **kwargs)
    try:
        yield pool
    finally:
        await pool.close()
