"""A node service registers its versions before serving, and refuses to start when a
version's manifest differs from the one registered under it."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from infra.database import connect, create_pool
from infra.migrations import migrate
from infra.stack import addresses
from registry.nodes import NodeRegistry
from tests.helpers.database import scratch_database
from tests.helpers.stack import CLI, TEST_CATALOG, RunningStack
from tests.support.nodes import catalog

pytestmark = pytest.mark.timeout(120)


async def test_a_changed_manifest_under_a_registered_version_stops_the_service(
    stack: RunningStack,
):
    async with scratch_database(addresses(stack.settings).database) as url:
        conn = await connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        echo = next(n for n in catalog.nodes() if n.ref == "test.echo@1.0.0")
        changed = {**echo.manifest(), "description": "something else entirely"}
        pool = await create_pool(url)
        try:
            await NodeRegistry(pool, "someone").register([changed], status="production")
        finally:
            await pool.close()

        env = {**stack.env, "REFLUX_DATABASE_URL": url}
        done = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "versions"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reflux: test.echo@1.0.0 is already registered with a different")
    assert "by someone" in last and "a changed node needs a new version" in last
    assert "Traceback" not in done.stderr
