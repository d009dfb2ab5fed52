"""What every command shares: output streams, exit codes, and the registry connection."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from infra import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def out(message: str) -> None:
    print(message, flush=True)


def out_json(value: Any) -> None:
    out(json.dumps(value, default=str))


@asynccontextmanager
async def nats_connection(settings: Settings) -> AsyncIterator[Any]:
    """A NATS connection for one command; unreachable: a one-line ServiceError in ~3 s."""
    import asyncio

    import nats

    from infra import ServiceError, addresses

    url = addresses(settings).nats

    async def quiet(_: Exception) -> None:
        return None

    try:
        # nats-py retries a refused server forever even without reconnects: bound it.
        nc = await asyncio.wait_for(
            nats.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=quiet),
            timeout=3,
        )
    except Exception as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else str(exc)
        raise ServiceError(
            f"cannot reach NATS at {url}: {reason} (is `reflux up` running?)"
        ) from None
    try:
        yield nc
    finally:
        await nc.close()


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the registry database for one command."""
    from infra import pool_for

    async with pool_for(settings, min_size=1, max_size=4) as pool:
        yield pool


def argument_text(value: str, flag: str) -> str:
    """An argument given as text, or as `@file` (read as UTF-8); a file that cannot be read
    is a one-line SpecError naming the flag."""
    from pathlib import Path

    from infra import SpecError

    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SpecError([f"{flag}: cannot read {value[1:]}: {why}"]) from None
