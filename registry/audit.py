"""The audit trail: every mutating API call, who made it, what it was, how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

__all__ = ["AuditEntry", "entries", "record"]


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    token_id: str | None
    role: str | None
    namespace: str | None
    method: str
    path: str
    action: str
    status: int
    detail: dict[str, Any]


async def record(
    pool: asyncpg.Pool,
    *,
    token_id: str | None,
    role: str | None,
    namespace: str | None,
    method: str,
    path: str,
    action: str,
    status: int,
    detail: dict[str, Any] | None = None,
) -> None:
    await pool.execute(
        "INSERT INTO audit_log (token_id, role, namespace, method, path, action, status, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        token_id, role, namespace, method, path, action, status, detail or {},
    )  # fmt: skip


async def entries(pool: asyncpg.Pool, limit: int = 100) -> list[AuditEntry]:
    rows = await pool.fetch(
        "SELECT id, at, token_id, role, namespace, method, path, action, status, detail"
        " FROM audit_log ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [AuditEntry(**row) for row in rows]
