"""Workflow definitions as numbered versions: the YAML source as pushed, its parsed spec and
a hash of that spec, so pushing unchanged content (comments and layout aside) makes no new
version. Pushes of one workflow are serialised by a row lock, so versions never collide.
A workflow stays in the namespace of its first push: a push never moves it to another."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from infra import NotFoundError, RegistryError
from registry.versions import did_you_mean

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

    @property
    def ref(self) -> str:
        return f"{self.workflow_id}@{self.version}"


@dataclass(frozen=True)
class Workflow:
    id: str
    namespace: str
    description: str
    latest_version: int
    updated_at: datetime


@dataclass(frozen=True)
class Push:
    version: WorkflowVersion
    created: bool
    """False: the content matched the latest version, which is returned instead."""


class WorkflowRegistry:
    def __init__(self, pool: asyncpg.Pool, actor: str) -> None:
        self.pool = pool
        self.actor = actor

    async def push(self, definition: Definition) -> Push:
        """Store a validated definition as the next version of its workflow, unless the
        latest version has the same spec."""
        spec, source, data = definition, definition.source, definition.spec
        digest = spec_hash(data)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO workflows (id, namespace, description, latest_version, created_by)"
                " VALUES ($1, $2, $3, 0, $4) ON CONFLICT (id) DO NOTHING",
                spec.id, spec.namespace, spec.description, self.actor,
            )  # fmt: skip
            current = await conn.fetchrow(
                "SELECT latest_version, namespace FROM workflows WHERE id = $1 FOR UPDATE",
                spec.id,
            )
            latest, namespace = current["latest_version"], current["namespace"]
            if namespace != spec.namespace:
                raise RegistryError(moved_message(spec.id, namespace, spec.namespace))
            if latest:
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM workflow_versions"
                    " WHERE workflow_id = $1 AND version = $2",
                    spec.id, latest,
                )  # fmt: skip
                if row["spec_hash"] == digest:
                    return Push(_version(row), created=False)
            row = await conn.fetchrow(
                "INSERT INTO workflow_versions"
                " (workflow_id, version, source, spec, spec_hash, created_by)"
                f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
                spec.id, latest + 1, source, data, digest, self.actor,
            )  # fmt: skip
            await conn.execute(
                "UPDATE workflows SET latest_version = $2, description = $3, updated_at = now()"
                " WHERE id = $1",
                spec.id, latest + 1, spec.description,
            )  # fmt: skip
        return Push(_version(row), created=True)

    async def workflows(self) -> list[Workflow]:
        rows = await self.pool.fetch(
            "SELECT id, namespace, description, latest_version, updated_at FROM workflows"
            " WHERE latest_version > 0 ORDER BY id"
        )
        return [Workflow(**row) for row in rows]

    async def namespace_of(self, workflow_id: str) -> str | None:
        """The workflow's namespace; None when there is no such workflow."""
        value = await self.pool.fetchval(
            "SELECT namespace FROM workflows WHERE id = $1", workflow_id
        )
        return str(value) if value is not None else None

    async def versions(self, workflow_id: str) -> list[WorkflowVersion]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM workflow_versions WHERE workflow_id = $1 ORDER BY version",
            workflow_id,
        )
        if not rows:
            raise await self._unknown(workflow_id)
        return [_version(row) for row in rows]

    async def get(self, workflow_id: str, version: int | None = None) -> WorkflowVersion:
        """One version; None: the latest."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM workflow_versions WHERE workflow_id = $1"
            " AND version = coalesce($2, (SELECT latest_version FROM workflows WHERE id = $1))",
            workflow_id, version,
        )  # fmt: skip
        if row is None:
            latest = await self.pool.fetchval(
                "SELECT latest_version FROM workflows WHERE id = $1", workflow_id
            )
            if not latest:
                raise await self._unknown(workflow_id)
            raise NotFoundError(
                f"workflow {workflow_id} has no version {version} (versions 1 to {latest})"
            )
        return _version(row)

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

    async def _unknown(self, workflow_id: str) -> NotFoundError:
        ids = [r["id"] for r in await self.pool.fetch("SELECT id FROM workflows")]
        return NotFoundError(f"unknown workflow '{workflow_id}'{did_you_mean(workflow_id, ids)}")


_COLUMNS = "workflow_id, version, source, spec_hash, created_at, created_by"


def _version(row: asyncpg.Record) -> WorkflowVersion:
    return WorkflowVersion(**row)
