"""Migration 0005 (webhook deliveries told apart per signing key) applies over any rows the
older per-trigger form left, whatever their ids, and then holds one row per delivery of a
key across every workflow and trigger."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from infra.database import connect
from infra.migrations import MIGRATIONS_DIR, load_migrations, migrate

pytestmark = pytest.mark.timeout(120)


async def test_old_rows_never_stop_0005_and_new_ones_are_unique_per_key(
    empty_db: str, tmp_path: Path
):
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) < 5:
            shutil.copy(path, before / path.name)
    conn = await connect(empty_db)
    try:
        await migrate(conn, migrations=load_migrations(before))
        for workflow, trigger in (("a", "t"), ("b", "t"), ("a", "u")):  # the same ids, as a
            await conn.execute(  # sender could have sent them to three hooks
                "INSERT INTO webhook_deliveries (workflow_id, trigger_id, delivery_id, run_id)"
                " VALUES ($1, $2, 'key:1', 'r'), ($1, $2, 'd-1', 'r')",
                workflow, trigger,
            )  # fmt: skip
        applied = await migrate(conn)
        assert applied[0].filename == "0005_webhook_keys.sql"  # then the later ones

        insert = (
            "INSERT INTO webhook_deliveries"
            " (workflow_id, trigger_id, delivery_id, run_id, signing_key)"
            " VALUES ($1, $2, 'key:abc', $3, 'default/HOOK')"
        )
        await conn.execute(insert, "a", "t", "r1")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, "b", "other", "r2")  # another trigger of the same key
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 7
    finally:
        await conn.close()
