"""Workflow definitions as numbered versions: the YAML source as pushed, its parsed spec and
a hash of that spec, so pushing unchanged content (comments and layout aside) makes no new
version. A workflow stays in the namespace of its first push: a push never moves it to another.

One version is live: what a run of the workflow gets, and whose triggers and cron are in
force. A normal push makes its version live; a candidate push stores it beside the live one
until it is promoted. A rollout sends a share of new runs, chosen from the run id with the
node rollouts' rule (`rollout_bucket`), to one other version. Every change takes the
workflow's row lock, so changes apply one after the other, and each is recorded once in
`workflow_events` with who and when.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from infra import LifecycleError, NotFoundError, RegistryError
from registry.versions import did_you_mean, rollout_bucket

_REF = re.compile(r"(?P<id>[a-z0-9][a-z0-9._-]*)(?:@(?P<version>\d+))?")


def spec_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_ref(text: str) -> tuple[str, int | None]:
    """ "order-sync" -> ("order-sync", None); "order-sync@3" -> ("order-sync", 3)."""
    match = _REF.fullmatch(text.strip())
    if not match:
        raise RegistryError(f"'{text}' is not a workflow reference like my-flow or my-flow@3")
    version = match["version"]
    return match["id"], int(version) if version else None


def moved_message(workflow_id: str, namespace: str, wanted: str) -> str:
    return (
        f"workflow '{workflow_id}' is in namespace '{namespace}': a push may not move it to"
        f" '{wanted}' (push it with namespace: {namespace}, or choose another id)"
    )


@dataclass(frozen=True)
class Definition:
    """A validated workflow definition as plain data: what a push stores."""

    id: str
    namespace: str
    description: str
    spec: dict[str, Any]
    """The parsed spec as JSON (its hash decides whether a push makes a new version)."""
    source: str
    """The YAML as pushed, comments and layout kept."""


@dataclass(frozen=True)
class WorkflowVersion:
    workflow_id: str
    version: int
    source: str
    spec_hash: str
    created_at: datetime
    created_by: str
    live: bool = False
    """The live version when read: what new runs get, whose triggers are in force."""
    candidate: bool = False
    """Pushed as a candidate and not live since."""
    note: str = ""
    """Why it was pushed, when the pusher said (e.g. the proposal it applies)."""

    @property
    def ref(self) -> str:
        return f"{self.workflow_id}@{self.version}"


@dataclass(frozen=True)
class Workflow:
    id: str
    namespace: str
    description: str
    """The live version's description."""
    latest_version: int
    """The newest version, live or not."""
    live_version: int
    updated_at: datetime


@dataclass(frozen=True)
class Push:
    version: WorkflowVersion
    created: bool
    """False: the content matched the live or the newest version, which is returned instead."""
    went_live: bool = False
    """True: this push changed which version is live (its triggers and cron must follow)."""


@dataclass(frozen=True)
class WorkflowRollout:
    """A share of a workflow's new runs sent to a version other than the live one."""

    workflow_id: str
    version: int
    percent: int
    updated_at: datetime
    updated_by: str

    @property
    def ref(self) -> str:
        return f"{self.workflow_id}@{self.version}"


@dataclass(frozen=True)
class Promotion:
    workflow_id: str
    version: int
    previous: int | None
    """The version live before (None: there was none)."""
    rollout_ended: int | None = None
    """The percent of this version's rollout, which the promotion ended (None: it had none)."""

    @property
    def changed(self) -> bool:
        return self.previous != self.version


@dataclass(frozen=True)
class WorkflowEvent:
    id: int
    workflow_id: str
    version: int
    action: str
    """pushed, promoted, rollout_started, rollout_changed or rollout_ended."""
    detail: dict[str, Any]
    actor: str
    at: datetime


class WorkflowRegistry:
    def __init__(self, pool: asyncpg.Pool, actor: str) -> None:
        self.pool = pool
        self.actor = actor

    async def push(self, definition: Definition, candidate: bool = False, note: str = "") -> Push:
        """Store a validated definition as the next version of its workflow, and make it live
        unless `candidate`. Content the live version already has stores nothing; so does
        content the newest version has, except that a normal push makes that version live.
        `note` (why) is kept with the version and its event."""
        spec, source, data = definition, definition.source, definition.spec
        digest = spec_hash(data)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO workflows (id, namespace, description, latest_version, created_by)"
                " VALUES ($1, $2, $3, 0, $4) ON CONFLICT (id) DO NOTHING",
                spec.id, spec.namespace, spec.description, self.actor,
            )  # fmt: skip
            current = await self._lock(conn, spec.id)
            latest, live = current["latest_version"], current["live_version"]
            namespace = current["namespace"]
            if namespace != spec.namespace:
                raise RegistryError(moved_message(spec.id, namespace, spec.namespace))
            if candidate and not latest:
                raise RegistryError(
                    f"workflow '{spec.id}' has no version yet, and a candidate waits beside a"
                    " live one: push its first version without candidate"
                )
            if latest:
                same = await conn.fetch(
                    f"{_SELECT} WHERE v.workflow_id = $1 AND v.version = ANY($2::integer[])"
                    " AND v.spec_hash = $3 ORDER BY v.version = w.live_version DESC",
                    spec.id, [live or 0, latest], digest,
                )  # fmt: skip
                if same and (same[0]["live"] or candidate):
                    return Push(_version(same[0]), created=False)
                if same:  # the newest version, not live: this push makes it live
                    made = {"by": "push", **({"note": note} if note else {})}
                    await self._go_live(conn, spec.id, latest, live, made)
                    row = await self._fetch_version(conn, spec.id, latest)
                    return Push(_version(row), created=False, went_live=True)
            version = latest + 1
            await conn.execute(
                "INSERT INTO workflow_versions"
                " (workflow_id, version, source, spec, spec_hash, created_by, candidate, note)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                spec.id, version, source, data, digest, self.actor, candidate, note,
            )  # fmt: skip
            await conn.execute(
                "UPDATE workflows SET latest_version = $2, updated_at = now() WHERE id = $1",
                spec.id, version,
            )  # fmt: skip
            if not candidate:
                await conn.execute(
                    "UPDATE workflows SET live_version = $2, description = $3 WHERE id = $1",
                    spec.id, version, spec.description,
                )  # fmt: skip
            detail = {"candidate": candidate, "live": live if candidate else version}
            if note:
                detail["note"] = note
            await self._event(conn, spec.id, version, "pushed", detail)
            row = await self._fetch_version(conn, spec.id, version)
        return Push(_version(row), created=True, went_live=not candidate)

    async def workflows(self) -> list[Workflow]:
        rows = await self.pool.fetch(
            "SELECT id, namespace, description, latest_version, live_version, updated_at"
            " FROM workflows WHERE latest_version > 0 ORDER BY id"
        )
        return [Workflow(**row) for row in rows]

    async def namespace_of(self, workflow_id: str) -> str | None:
        """The workflow's namespace; None when there is no such workflow."""
        value = await self.pool.fetchval(
            "SELECT namespace FROM workflows WHERE id = $1", workflow_id
        )
        return str(value) if value is not None else None

    async def versions(self, workflow_id: str) -> list[WorkflowVersion]:
        """Every version, oldest first, each saying whether it is live or a candidate."""
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE v.workflow_id = $1 ORDER BY v.version", workflow_id
        )
        if not rows:
            raise await self._unknown(self.pool, workflow_id)
        return [_version(row) for row in rows]

    async def get(self, workflow_id: str, version: int | None = None) -> WorkflowVersion:
        """One version; None: the live one."""
        row = await self.pool.fetchrow(
            f"{_SELECT} WHERE v.workflow_id = $1 AND v.version = coalesce($2, w.live_version)",
            workflow_id, version,
        )  # fmt: skip
        if row is None:
            raise await self._no_version(self.pool, workflow_id, version)
        return _version(row)

    async def live(self, workflow_id: str) -> WorkflowVersion:
        """The live version: what a run of the workflow gets, whose triggers are in force."""
        return await self.get(workflow_id, None)

    async def diff(self, workflow_id: str, old: int, new: int) -> str:
        """A unified diff of two versions' sources ('' when they are the same text)."""
        a, b = await self.get(workflow_id, old), await self.get(workflow_id, new)
        return "".join(
            difflib.unified_diff(
                a.source.splitlines(keepends=True),
                b.source.splitlines(keepends=True),
                fromfile=a.ref,
                tofile=b.ref,
            )
        )

    # -- the live pointer and rollouts -------------------------------------------------

    async def promote(self, workflow_id: str, version: int) -> Promotion:
        """Make `version` live (ending its rollout, if it has one). Promoting the live
        version changes nothing and records nothing. Any stored version may be promoted:
        an older one too (a rollback)."""
        async with self.pool.acquire() as conn, conn.transaction():
            live = (await self._lock(conn, workflow_id))["live_version"]
            await self._fetch_version(conn, workflow_id, version)
            if version == live:
                return Promotion(workflow_id, version, live)
            ended = await self._go_live(conn, workflow_id, version, live)
        return Promotion(workflow_id, version, live, ended)

    async def set_rollout(
        self, workflow_id: str, version: int, percent: int
    ) -> WorkflowRollout | None:
        """Send `percent` of new runs to `version` instead of the live one (0 ends its
        rollout). A workflow has at most one rollout: a new one replaces the old. Returns
        the rollout as it was before."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise RegistryError(f"rollout percent must be between 0 and 100, got {percent}")
        ref = f"{workflow_id}@{version}"
        async with self.pool.acquire() as conn, conn.transaction():
            live = (await self._lock(conn, workflow_id))["live_version"]
            await self._fetch_version(conn, workflow_id, version)
            previous = await self._rollout(conn, workflow_id)
            was = {"version": previous.version, "percent": previous.percent} if previous else None
            if percent == 0:
                if previous is None or previous.version != version:
                    now = f"{previous.ref} is at {previous.percent}%" if previous else "none is on"
                    raise LifecycleError(f"no rollout of {ref} to end ({now})")
                await conn.execute(
                    "DELETE FROM workflow_rollouts WHERE workflow_id = $1", workflow_id
                )
                await self._event(conn, workflow_id, version, "rollout_ended", {"previous": was})
                return previous
            if version == live:
                raise LifecycleError(
                    f"cannot roll out {ref}: it is live, it has every run a rollout does not"
                    " take (roll out another version, or promote one)"
                )
            await conn.execute(
                "INSERT INTO workflow_rollouts (workflow_id, version, percent, updated_by)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO UPDATE SET"
                " version = $2, percent = $3, updated_at = now(), updated_by = $4",
                workflow_id, version, percent, self.actor,
            )  # fmt: skip
            if previous is not None and previous.version != version:
                ended = {"replaced_by": version, "percent": previous.percent}
                await self._event(conn, workflow_id, previous.version, "rollout_ended", ended)
            action = (
                "rollout_changed"
                if previous is not None and previous.version == version
                else "rollout_started"
            )
            detail = {"percent": percent, "live": live, "previous": was}
            await self._event(conn, workflow_id, version, action, detail)
        return previous

    async def rollout(self, workflow_id: str) -> WorkflowRollout | None:
        """The workflow's rollout; None when it has none."""
        async with self.pool.acquire() as conn:
            found = await self._rollout(conn, workflow_id)
            if found is None and not await conn.fetchval(
                "SELECT latest_version FROM workflows WHERE id = $1", workflow_id
            ):
                raise await self._unknown(conn, workflow_id)
        return found

    async def choose(self, workflow_id: str, run_id: str) -> tuple[int, dict[str, str]]:
        """The version a new run `run_id` of the workflow runs, and the labels it gets:
        `{"rollout": "ID@N"}` when the rollout takes it, else none. The same run id always
        gets the same answer while the live version and the rollout stay as they are."""
        row = await self.pool.fetchrow(
            "SELECT w.live_version, r.version, r.percent FROM workflows w"
            " LEFT JOIN workflow_rollouts r ON r.workflow_id = w.id WHERE w.id = $1",
            workflow_id,
        )
        if row is None or row["live_version"] is None:
            raise await self._no_version(self.pool, workflow_id, None)
        if row["version"] is not None and rollout_bucket(run_id, workflow_id) < row["percent"]:
            return row["version"], {"rollout": f"{workflow_id}@{row['version']}"}
        return row["live_version"], {}

    async def events(self, workflow_id: str) -> list[WorkflowEvent]:
        """Every change to the workflow's versions, oldest first."""
        rows = await self.pool.fetch(
            "SELECT id, workflow_id, version, action, detail, actor, at FROM workflow_events"
            " WHERE workflow_id = $1 ORDER BY id",
            workflow_id,
        )
        if not rows and await self.namespace_of(workflow_id) is None:
            raise await self._unknown(self.pool, workflow_id)
        return [WorkflowEvent(**row) for row in rows]

    # -- helpers -----------------------------------------------------------------------

    async def _lock(self, conn: asyncpg.Connection, workflow_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(
            "SELECT latest_version, live_version, namespace FROM workflows"
            " WHERE id = $1 FOR UPDATE",
            workflow_id,
        )
        if row is None:
            raise await self._unknown(conn, workflow_id)
        return row

    async def _go_live(
        self,
        conn: asyncpg.Connection,
        workflow_id: str,
        version: int,
        previous: int | None,
        detail: dict[str, Any] | None = None,
    ) -> int | None:
        """Point the live pointer at `version` (the workflow's row locked); end its rollout.
        Returns the percent of the rollout it ended, if any."""
        await conn.execute(
            "UPDATE workflows w SET live_version = $2, updated_at = now(),"
            " description = coalesce(v.spec->>'description', w.description)"
            " FROM workflow_versions v WHERE w.id = $1 AND v.workflow_id = $1 AND v.version = $2",
            workflow_id, version,
        )  # fmt: skip
        await conn.execute(
            "UPDATE workflow_versions SET candidate = false"
            " WHERE workflow_id = $1 AND version = $2",
            workflow_id, version,
        )  # fmt: skip
        ended = await conn.fetchval(
            "DELETE FROM workflow_rollouts WHERE workflow_id = $1 AND version = $2"
            " RETURNING percent",
            workflow_id, version,
        )  # fmt: skip
        if ended is not None:
            gone = {"percent": ended, "by": "promoted"}
            await self._event(conn, workflow_id, version, "rollout_ended", gone)
        promoted = {"previous": previous, **(detail or {})}
        if ended is not None:
            promoted["rollout_ended"] = ended
        await self._event(conn, workflow_id, version, "promoted", promoted)
        return ended  # type: ignore[no-any-return]

    async def _rollout(self, conn: asyncpg.Connection, workflow_id: str) -> WorkflowRollout | None:
        row = await conn.fetchrow(
            "SELECT workflow_id, version, percent, updated_at, updated_by FROM workflow_rollouts"
            " WHERE workflow_id = $1",
            workflow_id,
        )
        return WorkflowRollout(**row) if row else None

    async def _fetch_version(
        self, conn: asyncpg.Connection, workflow_id: str, version: int
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            f"{_SELECT} WHERE v.workflow_id = $1 AND v.version = $2", workflow_id, version
        )
        if row is None:
            raise await self._no_version(conn, workflow_id, version)
        return row

    async def _event(
        self,
        conn: asyncpg.Connection,
        workflow_id: str,
        version: int,
        action: str,
        detail: dict[str, Any],
    ) -> None:
        await conn.execute(
            "INSERT INTO workflow_events (workflow_id, version, action, detail, actor)"
            " VALUES ($1, $2, $3, $4, $5)",
            workflow_id, version, action, detail, self.actor,
        )  # fmt: skip

    async def _no_version(
        self, conn: asyncpg.Pool | asyncpg.Connection, workflow_id: str, version: int | None
    ) -> NotFoundError:
        latest = await conn.fetchval(
            "SELECT latest_version FROM workflows WHERE id = $1", workflow_id
        )
        if not latest:
            return await self._unknown(conn, workflow_id)
        if version is None:
            return NotFoundError(f"workflow {workflow_id} has no live version")
        return NotFoundError(
            f"workflow {workflow_id} has no version {version} (versions 1 to {latest})"
        )

    async def _unknown(
        self, conn: asyncpg.Pool | asyncpg.Connection, workflow_id: str
    ) -> NotFoundError:
        rows = await conn.fetch("SELECT id FROM workflows WHERE latest_version > 0")
        ids = [r["id"] for r in rows]
        return NotFoundError(f"unknown workflow '{workflow_id}'{did_you_mean(workflow_id, ids)}")


_SELECT = (
    "SELECT v.workflow_id, v.version, v.source, v.spec_hash, v.created_at, v.created_by,"
    " coalesce(v.version = w.live_version, false) AS live, v.candidate, v.note"
    " FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id"
)


def _version(row: asyncpg.Record) -> WorkflowVersion:
    return WorkflowVersion(**row)
