"""The run ledger: which workflow version each run ran and the node versions pinned for it
when it started, then how it ended. Temporal holds the execution; this is what the registry
and the reflection layer join against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from infra import NotFoundError

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
    labels: dict[str, str] = field(default_factory=dict)
    shadow_of: str | None = None
    mutations: list[dict[str, Any]] = field(default_factory=list)
    """The graph mutations a variant run applied to its stored version."""


_COLUMNS = (
    "id, workflow_id, workflow_version, pins, status, error, started_at, ended_at, started_by,"
    " namespace, labels, shadow_of, mutations"
)


async def record_start(
    pool: asyncpg.Pool,
    run_id: str,
    workflow_id: str,
    workflow_version: int | None,
    pins: Pins,
    actor: str,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    shadow_of: str | None = None,
    mutations: list[dict[str, Any]] | None = None,
) -> bool:
    """Idempotent: a run id recorded before (a launcher retried with the same id) keeps its
    first record, whatever this call says, even once ended. True when this call made it."""
    done = await pool.execute(
        "INSERT INTO runs (id, workflow_id, workflow_version, pins, status, started_by,"
        " namespace, labels, shadow_of, mutations)"
        " VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        run_id, workflow_id, workflow_version, pins, actor, namespace, labels or {}, shadow_of,
        mutations or [],
    )  # fmt: skip
    return bool(done == "INSERT 0 1")


async def record_end(
    pool: asyncpg.Pool, run_id: str, status: str, error: dict[str, Any] | None = None
) -> bool:
    """Idempotent: a retried call, or one for a run already ended, changes nothing. True
    when this call ended the run."""
    done = await pool.execute(
        "UPDATE runs SET status = $2, error = $3, ended_at = now()"
        " WHERE id = $1 AND status = 'running'",
        run_id, status, error,
    )  # fmt: skip
    return bool(done == "UPDATE 1")


async def running_since(
    pool: asyncpg.Pool, older_than: timedelta, after: str = "", limit: int = 100
) -> list[tuple[str, datetime]]:
    """Ids (and start times) of runs still `running` that started more than `older_than`
    ago, in id order from after `after`: one page of what the reconciler checks."""
    rows = await pool.fetch(
        "SELECT id, started_at FROM runs WHERE status = 'running' AND id > $1"
        " AND started_at < now() - $2::interval ORDER BY id LIMIT $3",
        after, older_than, limit,
    )  # fmt: skip
    return [(row["id"], row["started_at"]) for row in rows]


async def get_run(pool: asyncpg.Pool, run_id: str) -> RunRecord:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM runs WHERE id = $1",
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
    labels: dict[str, str] | None = None,
    limit: int = 50,
) -> list[RunRecord]:
    """Newest first; each filter applies when given (`labels`: every pair must match)."""
    by_labels = " AND labels @> $5::jsonb" if labels else ""  # an empty filter scans the index
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM runs"
        " WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR workflow_id = $2)"
        f" AND ($3::text IS NULL OR status = $3){by_labels} ORDER BY started_at DESC LIMIT $4",
        namespace, workflow_id, status, limit, *([labels] if labels else []),
    )  # fmt: skip
    return [RunRecord(**row) for row in rows]


async def live_runs(
    pool: asyncpg.Pool,
    workflow_id: str,
    *,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    version: int | None = None,
    ended: bool = True,
    oldest_first: bool = False,
    limit: int = 50,
) -> list[RunRecord]:
    """Runs of live traffic (not shadow replays, not a validation's arms: no `shadow` or
    `experiment` label) of `workflow_id`, newest first unless `oldest_first`; `ended`:
    only those that ended. The samples a watch or a canary judges."""
    order = "ASC" if oldest_first else "DESC"
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM runs WHERE workflow_id = $1"
        " AND NOT labels ?| ARRAY['shadow', 'experiment']"
        " AND ($2::timestamptz IS NULL OR started_at > $2)"
        " AND ($3::timestamptz IS NULL OR started_at < $3)"
        " AND ($4::integer IS NULL OR workflow_version = $4)"
        f" AND (NOT $5 OR status <> 'running') ORDER BY started_at {order}, id LIMIT $6",
        workflow_id, started_after, started_before, version, ended, limit,
    )  # fmt: skip
    return [RunRecord(**row) for row in rows]


async def runs_by_id(pool: asyncpg.Pool, run_ids: list[str]) -> list[RunRecord]:
    """The ledger rows of these runs (those that exist), in no particular order."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM runs WHERE id = ANY($1::text[])", run_ids)
    return [RunRecord(**row) for row in rows]
