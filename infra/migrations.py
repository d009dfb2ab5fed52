"""Forward-only schema migrations: numbered plain-SQL files in `infra/migrations/`.

Each file runs in its own transaction and is recorded in `schema_migrations` with a checksum.
A session advisory lock serialises concurrent runners (`reflux up` and `reflux db migrate` in
several processes at once), so every migration applies exactly once. An applied file that
has since changed, or a database newer than this code, is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from infra.errors import ConfigError, ServiceError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
LOCK_KEY = 0x5245464C5558  # "REFLUX"
_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: datetime | None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.fullmatch(path.name)
        if not match:
            raise ConfigError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    numbers = [m.version for m in found]
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise ConfigError(f"{directory}: two migration files share number {twice[0]:04d}")
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigError(
                f"{directory}: migration {expected:04d} is missing (found {migration.filename})"
            )
    return found


async def migrate(
    conn: asyncpg.Connection,
    echo: Callable[[str], None] = lambda _: None,
    migrations: list[Migration] | None = None,
) -> list[Migration]:
    """Apply every pending migration in order; return those this call applied."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await conn.execute(_VERSION_TABLE)
        applied = await _applied(conn)
        _check(migrations, applied)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            try:
                await _apply(conn, migration)
            except asyncpg.PostgresError as exc:
                raise ServiceError(f"migration {migration.filename} failed: {exc}") from None
            echo(f"applied migration {migration.filename}")
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum,
        )


async def schema_status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[MigrationState]:
    """Every known migration with when it was applied (None: pending). A database this code
    cannot migrate (newer, or an applied file changed) raises ConfigError, as `migrate` does."""
    migrations = load_migrations() if migrations is None else migrations
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    when: dict[int, datetime] = {}
    if exists:
        rows = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations")
        _check(migrations, {row["version"]: row["checksum"] for row in rows})
        when = {row["version"]: row["applied_at"] for row in rows}
    return [MigrationState(m, when.get(m.version)) for m in migrations]


async def _applied(conn: asyncpg.Connection) -> dict[int, str]:
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def _check(migrations: list[Migration], applied: dict[int, str]) -> None:
    known = {m.version: (m.filename, m.checksum) for m in migrations}
    check_applied("database", known, applied, label=lambda v: f"{v:04d}")


def check_applied(
    what: str,
    known: Mapping[int, tuple[str, str]],
    applied: Mapping[int, str],
    label: Callable[[int], str] = str,
) -> None:
    """Refuse a schema newer than this code, or an applied migration changed since: the
    rule of every store we migrate. `known`: version → (name, checksum) of this code's
    migrations; `applied`: version → checksum recorded by the store."""
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise ConfigError(
            f"the {what} schema is at migration {label(newer[-1])}, newer than this Reflux "
            f"(which knows up to {label(max(known, default=0))}): upgrade Reflux"
        )
    for version, checksum in applied.items():
        name, expected = known[version]
        if expected != checksum:
            raise ConfigError(
                f"{what} migration {name} changed after it was applied; migrations are "
                "forward-only: restore it and add a new one"
            )
