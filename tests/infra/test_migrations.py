"""Schema migrations on a real PostgreSQL: from empty, concurrently, forward-only, and through
`reflux db migrate | status` against an external database given by URL."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.database import connect
from infra.errors import ConfigError, ServiceError
from infra.migrations import MIGRATIONS_DIR, load_migrations, migrate, schema_status
from infra.ports import free_port
from tests.helpers.stack import CLI

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
TABLES = {
    "nodes",
    "node_versions",
    "node_rollouts",
    "node_events",
    "workflows",
    "workflow_versions",
    "runs",
}


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A copy of the real migrations, for tests that add, edit or break files."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, directory / path.name)
    return directory


def next_name(directory: Path, name: str) -> Path:
    return directory / f"{len(list(directory.glob('*.sql'))) + 1:04d}_{name}.sql"


async def recorded(url: str) -> list[int]:
    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


async def test_migrate_from_empty_creates_the_schema_once(empty_db: str):
    known = load_migrations()
    conn = await connect(empty_db)
    try:
        lines: list[str] = []
        applied = await migrate(conn, lines.append)
        assert [m.filename for m in applied] == [m.filename for m in known]
        assert lines == [f"applied migration {m.filename}" for m in known]

        tables = {
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert TABLES | {"schema_migrations"} <= tables
        extensions = {
            row["extname"] for row in await conn.fetch("SELECT extname FROM pg_extension")
        }
        assert {"vector", "pg_trgm"} <= extensions

        again: list[str] = []
        assert await migrate(conn, again.append) == []
        assert again == []

        states = await schema_status(conn)
        assert [s.migration.filename for s in states] == [m.filename for m in known]
        assert all(s.applied_at is not None for s in states)
    finally:
        await conn.close()


async def test_schema_status_of_an_empty_database_is_all_pending(empty_db: str):
    conn = await connect(empty_db)
    try:
        states = await schema_status(conn)
    finally:
        await conn.close()
    assert states and all(s.applied_at is None for s in states)


async def test_concurrent_migrations_apply_each_file_exactly_once(empty_db: str):
    known = load_migrations()
    conns = [await connect(empty_db) for _ in range(8)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    assert sum(len(done) for done in results) == len(known)
    assert sorted(m.version for done in results for m in done) == [m.version for m in known]
    assert await recorded(empty_db) == [m.version for m in known]


async def test_a_new_file_applies_alone(empty_db: str, migrations_dir: Path):
    conn = await connect(empty_db)
    try:
        first = await migrate(conn, migrations=load_migrations(migrations_dir))
        path = next_name(migrations_dir, "add_notes")
        path.write_text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n")
        lines: list[str] = []
        applied = await migrate(conn, lines.append, load_migrations(migrations_dir))
        assert [m.filename for m in applied] == [path.name]
        assert lines == [f"applied migration {path.name}"]
        assert await conn.fetchval("SELECT to_regclass('notes') IS NOT NULL")
    finally:
        await conn.close()
    assert await recorded(empty_db) == [*(m.version for m in first), applied[0].version]


async def test_an_edited_applied_file_is_refused(empty_db: str, migrations_dir: Path):
    conn = await connect(empty_db)
    try:
        await migrate(conn, migrations=load_migrations(migrations_dir))
        path = migrations_dir / "0001_registry.sql"
        path.write_text(path.read_text() + "\n-- an afterthought\n")
        with pytest.raises(ConfigError, match=r"0001_registry\.sql changed after it was applied"):
            await migrate(conn, migrations=load_migrations(migrations_dir))
    finally:
        await conn.close()


async def test_a_database_newer_than_the_code_is_refused(empty_db: str):
    conn = await connect(empty_db)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')"
        )
        with pytest.raises(ConfigError, match=r"at migration 0099, newer than this Reflux"):
            await migrate(conn)
        with pytest.raises(ConfigError, match=r"at migration 0099"):  # status says so too
            await schema_status(conn)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("0001_again.sql", r"two migration files share number 0001"),
        ("2_short.sql", r"2_short\.sql: migration files are named NNNN_name\.sql"),
        ("0002_Upper.sql", r"0002_Upper\.sql: migration files are named NNNN_name\.sql"),
        ("0002-dash.sql", r"0002-dash\.sql: migration files are named NNNN_name\.sql"),
    ],
)
def test_badly_numbered_or_named_files_are_refused(migrations_dir: Path, name, message):
    (migrations_dir / name).write_text("SELECT 1;\n")
    with pytest.raises(ConfigError, match=message):
        load_migrations(migrations_dir)


def test_a_gap_in_the_numbers_is_refused(migrations_dir: Path):
    count = len(list(migrations_dir.glob("*.sql")))
    gap = migrations_dir / f"{count + 2:04d}_skipped.sql"
    gap.write_text("SELECT 1;\n")
    missing = rf"migration {count + 1:04d} is missing \(found {gap.name}\)"
    with pytest.raises(ConfigError, match=missing.replace(".sql", r"\.sql")):
        load_migrations(migrations_dir)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT no_such_column FROM half_done;\n", "no_such_column"),
        # the SQL itself succeeds but its record cannot be written: both must roll back
        (
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (2, 'x', 'x');\n",
            "duplicate key",
        ),
    ],
    ids=["sql-error", "record-fails"],
)
async def test_a_failing_migration_leaves_nothing_behind(
    empty_db: str, migrations_dir: Path, sql: str, reason: str
):
    conn = await connect(empty_db)
    try:
        before = await migrate(conn, migrations=load_migrations(migrations_dir))
        path = next_name(migrations_dir, "broken")
        path.write_text(
            "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\n" + sql
        )
        with pytest.raises(ServiceError, match=rf"migration {path.name} failed: .*{reason}"):
            await migrate(conn, migrations=load_migrations(migrations_dir))
        assert not await conn.fetchval("SELECT to_regclass('half_done') IS NOT NULL")
        # the lock was released: another session can migrate (and fails the same way)
        other = await connect(empty_db)
        try:
            with pytest.raises(ServiceError):
                await asyncio.wait_for(
                    migrate(other, migrations=load_migrations(migrations_dir)), timeout=10
                )
        finally:
            await other.close()
    finally:
        await conn.close()
    assert await recorded(empty_db) == [m.version for m in before]


def reflux(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REFLUX_HOME": str(home),
        "REFLUX_DATABASE_URL": url,
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [*CLI, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_db_migrate_and_status_against_an_external_database(empty_db: str, tmp_path: Path):
    first = reflux(tmp_path, empty_db, "db", "migrate")
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001_registry.sql" in first.stdout.splitlines()

    second = reflux(tmp_path, empty_db, "db", "migrate")
    assert second.returncode == 0, second.stderr
    assert "applied migration" not in second.stdout
    assert "schema up to date" in second.stdout

    status = reflux(tmp_path, empty_db, "db", "status")
    assert status.returncode == 0, status.stderr
    assert re.search(
        r"^0001_registry\.sql\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s*$", status.stdout, re.M
    )
    assert "pending" not in status.stdout


def test_db_status_of_an_unmigrated_database_fails(empty_db: str, tmp_path: Path):
    status = reflux(tmp_path, empty_db, "db", "status")
    assert status.returncode == 1, status.stderr
    assert re.search(r"^0001_registry\.sql\s+pending\s*$", status.stdout, re.M)


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path, command):
    url = f"postgresql://reflux:hunter2@127.0.0.1:{free_port()}/reflux"
    done = reflux(tmp_path, url, "db", command)
    assert done.returncode == 1
    assert done.stderr.startswith("reflux: cannot reach PostgreSQL"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
