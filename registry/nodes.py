"""The node catalog in PostgreSQL: versions with their manifests and lifecycle, rollouts,
search, and the `Catalog` snapshot that run starts resolve pins against.

Every change takes a row lock on the version (or node) it touches, so concurrent promotions
apply one after the other and each is recorded once in `node_events` with who and when.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from infra import LifecycleError, ManifestConflictError, NotFoundError, RegistryError
from registry.versions import (
    Catalog,
    Rollout,
    Semver,
    Status,
    VersionInfo,
    check_transition,
    did_you_mean,
)


def manifest_hash(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


EFFECT_KEYS = ("effects", "effects_when")
EFFECTS = ("none", "read", "write")


def check_effects(ref: str, manifest: dict[str, Any]) -> None:
    """RegistryError unless the manifest's effects are ones the engine knows: a shadow run
    treats any other value as a write, but a registry should not hold one."""
    said = [manifest.get("effects", "write")]
    rules = manifest.get("effects_when") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise RegistryError(f"{ref}: effects_when must be a list of rules")
    said += [rule.get("effect") for rule in rules]
    if any(effect not in EFFECTS for effect in said):
        raise RegistryError(f"{ref}: effects must be one of {', '.join(EFFECTS)}, got {said}")


def declares_effects(stored: dict[str, Any], announced: dict[str, Any]) -> bool:
    """Whether `announced` is `stored`, registered before nodes declared effects, with only
    its effects added: the one change a registered version may take (an upgrade). Effects
    once declared never change under the same version."""
    if any(key in stored for key in EFFECT_KEYS):
        return False
    bare = {k: v for k, v in announced.items() if k not in EFFECT_KEYS}
    return manifest_hash(bare) == manifest_hash(stored)


@dataclass(frozen=True)
class NodeVersion:
    name: str
    version: str
    status: Status
    manifest: dict[str, Any]
    artifact_uri: str | None
    changelog: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class NodeEvent:
    version: str
    action: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]
    actor: str
    at: datetime


@dataclass
class Node:
    name: str
    description: str
    tags: list[str]
    versions: list[NodeVersion] = field(default_factory=list)
    rollout: Rollout | None = None
    events: list[NodeEvent] = field(default_factory=list)


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    status: Status
    new: bool
    """False when the same manifest was already registered (nothing changed)."""


@dataclass(frozen=True)
class Change:
    name: str
    version: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class SearchHit:
    name: str
    description: str
    tags: list[str]
    score: float


class NodeRegistry:
    def __init__(self, pool: asyncpg.Pool, actor: str) -> None:
        self.pool = pool
        self.actor = actor

    # -- registration ------------------------------------------------------------------

    async def register(
        self,
        manifests: list[dict[str, Any]],
        *,
        status: Status = "draft",
        artifact_uri: str | None = None,
        changelog: str = "",
    ) -> list[Registration]:
        """Record node versions announced by a service. Idempotent: a version registered with
        the same manifest is left as it is (status included); a different manifest under a
        registered version raises ManifestConflictError and registers nothing."""
        done: dict[int, Registration] = {}
        # Nodes are locked in name order whatever the batch's order, so two services
        # registering the same nodes at once wait for each other instead of deadlocking.
        order = sorted(range(len(manifests)), key=lambda i: str(manifests[i]["name"]))
        async with self.pool.acquire() as conn, conn.transaction():
            for i in order:
                done[i] = await self._register_one(
                    conn, manifests[i], status, artifact_uri, changelog
                )
        return [done[i] for i in range(len(manifests))]

    async def _register_one(
        self,
        conn: asyncpg.Connection,
        manifest: dict[str, Any],
        status: Status,
        artifact_uri: str | None,
        changelog: str,
    ) -> Registration:
        name, version = manifest["name"], manifest["version"]
        semver = Semver.parse(version)
        check_effects(f"{name}@{version}", manifest)
        digest = manifest_hash(manifest)
        description = str(manifest.get("description", ""))
        tags = [str(t) for t in manifest.get("tags", [])]
        await conn.execute(
            "INSERT INTO nodes (name, description, tags, search_text, created_by)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            name, description, tags, _search_text(name, description, tags), self.actor,
        )  # fmt: skip
        # Registrations of one node take turns, so the newest version seen below includes
        # any registered concurrently and an older one never overwrites the description.
        await conn.execute("SELECT 1 FROM nodes WHERE name = $1 FOR UPDATE", name)
        inserted = await conn.fetchval(
            "INSERT INTO node_versions (name, version, major, minor, patch, status, manifest,"
            " manifest_hash, artifact_uri, changelog, created_by, updated_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)"
            " ON CONFLICT (name, version) DO NOTHING RETURNING true",
            name, version, *semver, status, manifest, digest, artifact_uri, changelog, self.actor,
        )  # fmt: skip
        if not inserted:
            row = await conn.fetchrow(
                "SELECT status, manifest, manifest_hash, created_by, created_at FROM node_versions"
                " WHERE name = $1 AND version = $2 FOR UPDATE",
                name, version,
            )  # fmt: skip
            if row["manifest_hash"] != digest and declares_effects(row["manifest"], manifest):
                await conn.execute(
                    "UPDATE node_versions SET manifest = $3, manifest_hash = $4, updated_by = $5,"
                    " updated_at = now() WHERE name = $1 AND version = $2",
                    name, version, manifest, digest, self.actor,
                )  # fmt: skip
                detail = {"effects": manifest.get("effects")}
                await self._event(conn, name, version, "effects declared", None, None, detail)
            elif row["manifest_hash"] != digest:
                raise ManifestConflictError(
                    f"{name}@{version} is already registered with a different manifest "
                    f"(by {row['created_by']} at {row['created_at']:%Y-%m-%d %H:%M:%S}); "
                    "a changed node needs a new version"
                )
            return Registration(name, version, row["status"], new=False)
        await self._event(conn, name, version, "registered", None, status)
        newest = await conn.fetchval(
            "SELECT max(ARRAY[major, minor, patch]) FROM node_versions WHERE name = $1", name
        )
        if list(semver) == newest:  # the node's description follows its newest version
            await conn.execute(
                "UPDATE nodes SET description = $2, tags = $3, search_text = $4 WHERE name = $1",
                name, description, tags, _search_text(name, description, tags),
            )  # fmt: skip
        return Registration(name, version, status, new=True)

    # -- reading -----------------------------------------------------------------------

    async def catalog(self) -> Catalog:
        """Every version's status and every rollout, read in one snapshot."""
        async with self.pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                versions = await conn.fetch(  # what runs need, not the params' JSON schemas
                    "SELECT name, status, jsonb_build_object('version', version,"
                    " 'timeout', manifest->'timeout', 'secret_params', manifest->'secret_params',"
                    " 'effects', manifest->'effects', 'effects_when', manifest->'effects_when')"
                    " AS manifest FROM node_versions"
                )
                rollouts = await conn.fetch("SELECT name, version, percent FROM node_rollouts")
        catalog = Catalog()
        for row in versions:
            catalog.versions.setdefault(row["name"], []).append(
                VersionInfo.from_manifest(row["manifest"], row["status"])
            )
        for row in rollouts:
            catalog.rollouts[row["name"]] = Rollout(row["version"], row["percent"])
        return catalog

    async def nodes(self) -> list[Node]:
        async with self.pool.acquire() as conn:
            nodes = await conn.fetch("SELECT name, description, tags FROM nodes ORDER BY name")
            versions = await conn.fetch(
                f"SELECT {_VERSION_COLUMNS} FROM node_versions ORDER BY name, major, minor, patch"
            )
            rollouts = await conn.fetch("SELECT name, version, percent FROM node_rollouts")
        by_name = {row["name"]: Node(row["name"], row["description"], row["tags"]) for row in nodes}
        for row in versions:
            by_name[row["name"]].versions.append(NodeVersion(**row))
        for row in rollouts:
            by_name[row["name"]].rollout = Rollout(row["version"], row["percent"])
        return list(by_name.values())

    async def show(self, name: str) -> Node:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT name, description, tags FROM nodes WHERE name = $1", name
            )
            if row is None:
                raise await self._unknown(conn, name)
            node = Node(row["name"], row["description"], row["tags"])
            versions = await conn.fetch(
                f"SELECT {_VERSION_COLUMNS} FROM node_versions WHERE name = $1"
                " ORDER BY major, minor, patch",
                name,
            )
            node.versions = [NodeVersion(**r) for r in versions]
            rollout = await conn.fetchrow(
                "SELECT version, percent FROM node_rollouts WHERE name = $1", name
            )
            if rollout is not None:
                node.rollout = Rollout(rollout["version"], rollout["percent"])
            events = await conn.fetch(
                "SELECT version, action, from_status, to_status, detail, actor, at"
                " FROM node_events WHERE name = $1 ORDER BY id",
                name,
            )
            node.events = [NodeEvent(**r) for r in events]
        return node

    async def search(self, text: str, limit: int = 20) -> list[SearchHit]:
        """Nodes whose name, description or tags resemble `text` (trigram word similarity),
        or contain it, best first."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # pg_trgm's default (0.6) misses one-letter typos in short words ("reqest").
            await conn.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {SEARCH_THRESHOLD}")
            rows = await conn.fetch(
                "SELECT name, description, tags, word_similarity($1, search_text) AS score"
                " FROM nodes"
                " WHERE $1 <% search_text OR strpos(lower(search_text), lower($1)) > 0"
                " ORDER BY score DESC, name LIMIT $2",
                text, limit,
            )  # fmt: skip
        return [SearchHit(r["name"], r["description"], r["tags"], r["score"]) for r in rows]

    # -- lifecycle ---------------------------------------------------------------------

    async def promote(
        self, name: str, version: str, to: Status, *, force: bool = False, note: str = ""
    ) -> Change:
        """Move a version to `to`, if the lifecycle allows it (see `check_transition`).
        Moving to the status it already has changes nothing and records nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await self._lock_version(conn, name, version)
            try:
                check_transition(current, to, force=force)
            except LifecycleError as exc:
                raise LifecycleError(f"cannot move {name}@{version} to {to}: {exc}") from None
            if current == to:
                return Change(name, version, current, to)
            await conn.execute(
                "UPDATE node_versions SET status = $3, updated_at = now(), updated_by = $4"
                " WHERE name = $1 AND version = $2",
                name, version, to, self.actor,
            )  # fmt: skip
            detail: dict[str, Any] = {"note": note} if note else {}
            if to == "deprecated":
                dropped = await conn.fetchval(
                    "DELETE FROM node_rollouts WHERE name = $1 AND version = $2 RETURNING percent",
                    name, version,
                )  # fmt: skip
                if dropped is not None:
                    detail["rollout_stopped_at"] = dropped
            if force:
                detail["forced"] = True
            action = "deprecated" if to == "deprecated" else "promoted"
            await self._event(conn, name, version, action, current, to, detail)
        return Change(name, version, current, to)

    async def deprecate(self, name: str, version: str, *, note: str = "") -> Change:
        return await self.promote(name, version, "deprecated", note=note)

    async def rollout(self, name: str, version: str, percent: int) -> Rollout | None:
        """Send `percent` of new runs whose spec `version` matches to it (0 stops the rollout).
        A node has at most one rollout: a new one replaces the old. Returns the previous."""
        if not 0 <= percent <= 100:
            raise RegistryError(f"rollout percent must be between 0 and 100, got {percent}")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM nodes WHERE name = $1 FOR UPDATE", name)
            status = await self._lock_version(conn, name, version)
            row = await conn.fetchrow(
                "SELECT version, percent FROM node_rollouts WHERE name = $1", name
            )
            previous = Rollout(row["version"], row["percent"]) if row else None
            if percent == 0:
                if previous is None or previous.version != version:
                    now = (
                        f"{name}@{previous.version} is at {previous.percent}%"
                        if previous
                        else (f"{name} has none")
                    )
                    raise RegistryError(f"no rollout of {name}@{version} to stop ({now})")
                await conn.execute("DELETE FROM node_rollouts WHERE name = $1", name)
            else:
                if status not in ("staging", "production"):
                    raise LifecycleError(
                        f"cannot roll out {name}@{version}: it is {status}; only staging or "
                        "production versions take a share of runs"
                    )
                await conn.execute(
                    "INSERT INTO node_rollouts (name, version, percent, updated_by)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET"
                    " version = $2, percent = $3, updated_at = now(), updated_by = $4",
                    name, version, percent, self.actor,
                )  # fmt: skip
            detail: dict[str, Any] = {"percent": percent}
            if previous is not None:
                detail["previous"] = {"version": previous.version, "percent": previous.percent}
            await self._event(conn, name, version, "rollout", status, status, detail)
        return previous

    # -- helpers -----------------------------------------------------------------------

    async def _lock_version(self, conn: asyncpg.Connection, name: str, version: str) -> Status:
        status = await conn.fetchval(
            "SELECT status FROM node_versions WHERE name = $1 AND version = $2 FOR UPDATE",
            name, version,
        )  # fmt: skip
        if status is None:
            raise await self._unknown(conn, name, version)
        return status  # type: ignore[no-any-return]

    async def _unknown(
        self, conn: asyncpg.Connection, name: str, version: str | None = None
    ) -> NotFoundError:
        versions = await conn.fetch(
            "SELECT version FROM node_versions WHERE name = $1 ORDER BY major, minor, patch", name
        )
        if not versions:
            names = [r["name"] for r in await conn.fetch("SELECT name FROM nodes")]
            return NotFoundError(f"unknown node '{name}'{did_you_mean(name, names)}")
        have = [r["version"] for r in versions]
        return NotFoundError(
            f"{name} has no version {version} (known: {', '.join(have)})"
            f"{did_you_mean(version or '', have)}"
        )

    async def _event(
        self,
        conn: asyncpg.Connection,
        name: str,
        version: str,
        action: str,
        before: str | None,
        after: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await conn.execute(
            "INSERT INTO node_events (name, version, action, from_status, to_status, detail, actor)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            name, version, action, before, after, detail or {}, self.actor,
        )  # fmt: skip


SEARCH_THRESHOLD = 0.45

_VERSION_COLUMNS = (
    "name, version, status, manifest, artifact_uri, changelog,"
    " created_at, created_by, updated_at, updated_by"
)


def _search_text(name: str, description: str, tags: list[str]) -> str:
    return " ".join([name, name.replace(".", " "), description, *tags])
