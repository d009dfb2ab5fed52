"""The run ledger: which workflow version each run ran and the node versions pinned for it
when it started, then how it ended. Temporal holds the execution; this is what the registry
and the reflection layer join against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from infra.errors import NotFoundError

Pins = dict[str, dict[str, str]]
"""Step id -> {"node": name, "version": "x.y.z"}."""


@dataclass(frozen=True)
class RunRecord:
    id: str
    workflow_id: str
    workflow_version: int | None
    pins: Pins
    status: str
    error: dict[str, Any] | None
    started_at: datetime
    ended_at: datetime | None
    started_by: str


async def record_start(
    pool: asyncpg.Pool,
    run_id: str,
    workflow_id: str,
    workflow_version: int | None,
    pins: Pins,
    actor: str,
) -> None:
    await pool.execute(
        "INSERT INTO runs (id, workflow_id, workflow_version, pins, status, started_by)"
        " VALUES ($1, $2, $3, $4, 'running', $5)",
        run_id, workflow_id, workflow_version, pins, actor,
    )  # fmt: skip


async def record_end(
    pool: asyncpg.Pool, run_id: str, status: str, error: dict[str, Any] | None = None
) -> None:
    """Idempotent: a retried call, or one for a run already ended, changes nothing."""
    await pool.execute(
        "UPDATE runs SET status = $2, error = $3, ended_at = now()"
        " WHERE id = $1 AND status = 'running'",
        run_id, status, error,
    )  # fmt: skip


async def get_run(pool: asyncpg.Pool, run_id: str) -> RunRecord:
    row = await pool.fetchrow(
        "SELECT id, workflow_id, workflow_version, pins, status, error, started_at, ended_at,"
        " started_by FROM runs WHERE id = $1",
        run_id,
    )
    if row is None:
        raise NotFoundError(f"no run '{run_id}'")
    return RunRecord(**row)
