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
    namespace: str = "default"


async def record_start(
    pool: asyncpg.Pool,
    run_id: str,
    workflow_id: str,
    workflow_version: int | None,
    pins: Pins,
    actor: str,
    namespace: str = "default",
) -> None:
    await pool.execute(
        "INSERT INTO runs (id, workflow_id, workflow_version, pins, status, started_by,"
        " namespace) VALUES ($1, $2, $3, $4, 'running', $5, $6)",
        run_id, workflow_id, workflow_version, pins, actor, namespace,
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
        " started_by, namespace FROM runs WHERE id = $1",
        run_id,
    )
    if row is None:
        raise NotFoundError(f"no run '{run_id}'")
    return RunRecord(**row)


async def list_runs(
    pool: asyncpg.Pool,
    *,
    namespace: str | None = None,
    workflow_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Newest first; each filter applies when given."""
    rows = await pool.fetch(
        "SELECT id, workflow_id, workflow_version, pins, status, error, started_at, ended_at,"
        " started_by, namespace FROM runs"
        " WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR workflow_id = $2)"
        " AND ($3::text IS NULL OR status = $3) ORDER BY started_at DESC LIMIT $4",
        namespace, workflow_id, status, limit,
    )  # fmt: skip
    return [RunRecord(**row) for row in rows]
