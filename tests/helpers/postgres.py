"""A PostgreSQL of a test's own, started the way the stack starts its own, that the test may
stop and start again (the session's must stay up for everyone else)."""

from __future__ import annotations

import time
from pathlib import Path

from infra.database import connect
from infra.migrations import migrate
from infra.ports import free_port
from infra.processes import ProcessRecord, spawn, stop, wait_ready
from infra.services import PostgresService
from infra.settings import DatabaseSettings, Settings

__all__ = ["OwnPostgres"]


class OwnPostgres:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.settings = Settings(home=home, database=DatabaseSettings(port=free_port()))
        self.service = PostgresService(self.settings, home)
        self.record: ProcessRecord | None = None

    @property
    def url(self) -> str:
        return self.service.default_address

    async def start(self) -> None:
        """Start it (the first time: initdb, the database, every migration)."""
        first = not (self.service.data_dir / "PG_VERSION").exists()
        self.service.prepare()
        spec = self.service.process_spec()
        self.record = spawn(
            spec, log_path=self.home / "logs" / "postgres.log", run_dir=self.home / "run"
        )
        await wait_ready(spec, self.record, time.monotonic() + 60)
        if first:
            await self.service.bootstrap()
            conn = await connect(self.url)
            try:
                await migrate(conn)
            finally:
                await conn.close()

    async def stop(self) -> None:
        """A fast shutdown: connected clients are cut off, as in an outage."""
        if self.record is not None:
            await stop(self.record)
            self.record = None
