"""What every command shares: output streams, exit codes, and the registry connection."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from infra.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def out(message: str) -> None:
    print(message, flush=True)


def out_json(value: Any) -> None:
    out(json.dumps(value, default=str))


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the registry database for one command."""
    from infra.database import pool_for

    async with pool_for(settings, min_size=1, max_size=4) as pool:
        yield pool
