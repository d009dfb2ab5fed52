"""The `proposals` catalog in Postgres: filing, reading, listing, and the status writes of
the lifecycle workflow (its activities are the only callers of `transition`).

A row holds the contract JSON (`body`) beside the columns lists filter on; the history of
transitions is `proposal_history`, joined in when one proposal is read. Filing a finding
whose signature an open proposal has updates that proposal's figures instead (a partial
unique index makes two scans at once file it once).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from evolution.proposals.model import (
    OPEN,
    TRANSITIONS,
    Finding,
    Proposal,
    Source,
    Transition,
    new_id,
)
from infra import ConfigError, LifecycleError, NotFoundError

LIST_LIMIT = 200
_COLUMNS = "id, namespace, workflow_id, kind, status, source, signature, body, created_by"
_REFRESHED = (
    "kind", "title", "diagnosis", "mutation", "evidence", "expected", "workflow_version", "node",
)  # fmt: skip
"""What a later scan's finding replaces in an `open` proposal (not its status)."""
_FIGURES = ("evidence", "expected")
"""What it replaces in one being validated or judged: the figures, never the change that
was (or is being) tried."""


class ProposalStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def file(
        self,
        finding: Finding,
        source: Source,
        actor: str,
        *,
        proposal_id: str | None = None,
        cooldown: timedelta | None = None,
    ) -> tuple[Proposal | None, bool]:
        """Store a finding as a new open proposal, or, when an open proposal has its
        signature, refresh that one (its figures only once it is being validated or was
        judged). Returns the proposal and whether it is new; (None, False) when a proposal
        with the signature was rejected less than `cooldown` ago (people said no: the
        Critic does not ask again at once). `proposal_id`: an id of the caller's (a second
        filing with it returns the first)."""
        if finding.signature:
            refreshed = await self._refresh(finding)
            if refreshed is not None:
                return refreshed, False
            if cooldown is not None and await self._rejected_since(finding, cooldown):
                return None, False
        if proposal_id is not None:
            try:
                return await self.get(proposal_id), False
            except NotFoundError:
                pass
        now = datetime.now(UTC)
        proposal = Proposal(
            **finding.model_dump(),
            id=proposal_id or new_id(),
            source=source,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    f"INSERT INTO proposals ({_COLUMNS}, created_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                    proposal.id, proposal.namespace, proposal.workflow_id, proposal.kind,
                    proposal.status, proposal.source, proposal.signature, _body(proposal),
                    actor, now,
                )  # fmt: skip
            except asyncpg.UniqueViolationError:  # another scan filed it a moment ago
                refreshed = await self._refresh(finding)
                if refreshed is not None:
                    return refreshed, False
                if proposal_id is None:
                    raise
                return await self.get(proposal_id), False
            await _history(conn, proposal.id, actor, None, "open", f"filed by {source}")
        return await self.get(proposal.id), True

    async def _refresh(self, finding: Finding) -> Proposal | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM proposals WHERE namespace = $1 AND workflow_id = $2"
                " AND signature = $3 AND status = ANY($4::text[]) FOR UPDATE",
                finding.namespace, finding.workflow_id, finding.signature, list(OPEN),
            )  # fmt: skip
            if row is None:
                return None
            body = dict(row["body"])
            fields = _REFRESHED if row["status"] == "open" else _FIGURES
            body.update(finding.model_dump(mode="json", include=set(fields)))
            await conn.execute(
                "UPDATE proposals SET body = $2, kind = $3, updated_at = now() WHERE id = $1",
                row["id"], body, body["kind"],
            )  # fmt: skip
        return await self.get(row["id"])

    async def _rejected_since(self, finding: Finding, cooldown: timedelta) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM proposals WHERE namespace = $1 AND workflow_id = $2"
            " AND signature = $3 AND status = 'rejected' AND updated_at > now() - $4::interval"
            " LIMIT 1",
            finding.namespace, finding.workflow_id, finding.signature, cooldown,
        )  # fmt: skip
        return found is not None

    async def get(self, proposal_id: str, namespace: str | None = None) -> Proposal:
        """One proposal with its history; NotFoundError (also for one of another namespace
        than `namespace`, when given: it is not there for that reader)."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, created_at, updated_at FROM proposals WHERE id = $1",
            proposal_id,
        )
        if row is None or (namespace is not None and row["namespace"] != namespace):
            raise NotFoundError(f"no proposal '{proposal_id}'")
        history = await self.pool.fetch(
            "SELECT at, actor, previous, status, note FROM proposal_history"
            " WHERE proposal_id = $1 ORDER BY id",
            proposal_id,
        )
        return _proposal(row, [Transition(**h) for h in history])

    async def list(
        self,
        *,
        namespace: str | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = LIST_LIMIT,
    ) -> list[Proposal]:
        """Newest first, without their histories; each filter applies when given."""
        if status is not None and status not in TRANSITIONS:
            raise ConfigError(f"unknown status '{status}' (one of {', '.join(TRANSITIONS)})")
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS}, created_at, updated_at FROM proposals"
            " WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR workflow_id = $2)"
            " AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR kind = $4)"
            " ORDER BY created_at DESC, id LIMIT $5",
            namespace, workflow_id, status, kind, min(max(limit, 1), LIST_LIMIT),
        )  # fmt: skip
        return [_proposal(row, []) for row in rows]

    async def unfinished(self) -> list[tuple[str, str]]:
        """(id, status) of every proposal whose life has not ended: each must have a
        lifecycle workflow (the evolution worker makes sure at start)."""
        rows = await self.pool.fetch(
            "SELECT id, status FROM proposals WHERE status <> ALL($1::text[])"
            " AND NOT (status = 'applied' AND coalesce(body #>> '{applied,watch,done}', '')"
            " = 'true' AND coalesce(body #>> '{applied,watch,result}', '') <> 'fail')"
            " ORDER BY id",
            [s for s, onward in TRANSITIONS.items() if not onward],
        )
        return [(r["id"], r["status"]) for r in rows]

    async def transition(
        self,
        proposal_id: str,
        status: str,
        actor: str,
        note: str = "",
        *,
        changes: Mapping[str, Any] | None = None,
        expect: Sequence[str] | None = None,
    ) -> Proposal:
        """Move a proposal to `status` (and set `changes` in its body: validation, applied),
        recording who and why. Only the lifecycle workflow calls this. Idempotent: a proposal
        already in `status` only takes the changes (an activity retried after it wrote).
        `expect`: the statuses it must be in, else LifecycleError."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT status, body FROM proposals WHERE id = $1 FOR UPDATE", proposal_id
            )
            if row is None:
                raise NotFoundError(f"no proposal '{proposal_id}'")
            current = row["status"]
            if current != status:
                if expect is not None and current not in expect:
                    raise LifecycleError(
                        f"proposal {proposal_id} is {current}, not {' or '.join(expect)}"
                    )
                if status not in TRANSITIONS[current]:
                    raise LifecycleError(
                        f"proposal {proposal_id} cannot go from {current} to {status}"
                    )
            body = dict(row["body"])
            body.update(_jsonable(changes or {}))
            body["status"] = status
            await conn.execute(
                "UPDATE proposals SET status = $2, body = $3, updated_at = now() WHERE id = $1",
                proposal_id, status, body,
            )  # fmt: skip
            if current != status:
                await _history(conn, proposal_id, actor, current, status, note)
        return await self.get(proposal_id)

    async def update(self, proposal_id: str, changes: Mapping[str, Any]) -> None:
        """Set parts of a proposal's body that are not its status (validation progress, the
        watch's state): the lifecycle's bookkeeping between transitions."""
        changed = await self.pool.execute(
            "UPDATE proposals SET body = body || $2::jsonb, updated_at = now() WHERE id = $1",
            proposal_id, _jsonable(changes),
        )  # fmt: skip
        if changed != "UPDATE 1":
            raise NotFoundError(f"no proposal '{proposal_id}'")


async def _history(
    conn: asyncpg.Connection, proposal_id: str, actor: str, previous: str | None, status: str,
    note: str,
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO proposal_history (proposal_id, actor, previous, status, note)"
        " VALUES ($1, $2, $3, $4, $5)",
        proposal_id, actor, previous, status, note[:2000],
    )  # fmt: skip


def _body(proposal: Proposal) -> dict[str, Any]:
    return proposal.model_dump(mode="json", exclude={"history"})


def _jsonable(changes: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(changes), default=_default))


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a proposal")


def _proposal(row: asyncpg.Record, history: list[Transition]) -> Proposal:
    body = dict(row["body"])
    body.update(
        id=row["id"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        history=history,
    )
    return Proposal.model_validate(body)
