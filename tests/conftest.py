from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from infra.database import connect, create_pool
from infra.migrations import migrate
from infra.stack import addresses
from tests.helpers.database import scratch_database
from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The whole platform, started once per test session (per xdist worker)."""
    running = start_test_stack(tmp_path_factory.mktemp("reflux-home"))
    try:
        yield running
    finally:
        stop_test_stack(running)


@pytest.fixture
async def empty_db(stack: RunningStack) -> AsyncIterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL (no migrations)."""
    async with scratch_database(addresses(stack.settings).database) as url:
        yield url


@pytest.fixture
async def db(empty_db: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a new database with every migration applied."""
    conn = await connect(empty_db)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(empty_db, max_size=12)
    try:
        yield pool
    finally:
        await pool.close()
