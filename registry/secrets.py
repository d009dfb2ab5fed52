"""The secret store: named values per namespace, sealed at rest (see `infra.secrets`).

Values go in and come out only through `set` and `value`; listing shows names, scopes and
who changed them, never a value. `value` falls back to the environment for the default
namespace (`REFLUX_SECRET_<NAME>`, `REFLUX_WEBHOOK_KEY_<NAME>`), so a single machine works
without the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from infra import MIN_SECRET, NotFoundError, SecretError, SecretKind, SecretsKey, environment_secret
from registry.tokens import check_namespace

__all__ = ["NAME_RE", "SecretInfo", "SecretStore", "check_name"]

NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
MAX_VALUE_BYTES = 64 * 1024
MIN_VALUE = MIN_SECRET
MIN_VALUE_WHY = f"a secret needs at least {MIN_SECRET} characters: shorter ones cannot be masked"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise SecretError(
            f"bad secret name '{name[:80]}': use A-Z, 0-9 and _, starting with a letter"
        )
    return name


@dataclass(frozen=True)
class SecretInfo:
    name: str
    namespace: str
    kind: SecretKind
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class SecretStore:
    def __init__(self, pool: asyncpg.Pool, key: SecretsKey | None, actor: str = "unknown") -> None:
        """`key` None: a store that can list and delete but neither seal nor open."""
        self.pool = pool
        self.key = key
        self.actor = actor

    def _key(self) -> SecretsKey:
        if self.key is None:
            raise SecretError("no secrets key is configured here (REFLUX_SECRETS_KEY)")
        return self.key

    async def set(self, namespace: str, name: str, value: str, kind: SecretKind = "secret") -> bool:
        """Store (or replace) a value; True when it is new."""
        check_name(name)
        check_namespace(namespace)
        if len(value) < MIN_VALUE:
            raise SecretError(f"secret '{name}': {MIN_VALUE_WHY}")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise SecretError(f"secret '{name}': the value is over {MAX_VALUE_BYTES} bytes")
        key = self._key()
        nonce, sealed = key.seal(kind, namespace, name, value)
        created = await self.pool.fetchval(
            "INSERT INTO secrets (kind, namespace, name, nonce, sealed, key_id, created_by,"
            " updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)"
            " ON CONFLICT (kind, namespace, name) DO UPDATE SET nonce = excluded.nonce,"
            " sealed = excluded.sealed, key_id = excluded.key_id,"
            " updated_by = excluded.updated_by, updated_at = now()"
            " RETURNING xmax = 0",
            kind, namespace, name, nonce, sealed, key.id, self.actor,
        )  # fmt: skip
        return bool(created)

    async def delete(self, namespace: str, name: str, kind: SecretKind = "secret") -> None:
        done = await self.pool.execute(
            "DELETE FROM secrets WHERE kind = $1 AND namespace = $2 AND name = $3",
            kind, namespace, name,
        )  # fmt: skip
        if done.endswith(" 0"):
            raise NotFoundError(f"no {_noun(kind)} '{name}' in namespace '{namespace}'")

    async def list(self, namespace: str | None = None) -> list[SecretInfo]:
        """Every secret (of one namespace when given): names and scopes, never values."""
        rows = await self.pool.fetch(
            "SELECT name, namespace, kind, created_by, created_at, updated_by, updated_at"
            " FROM secrets WHERE $1::text IS NULL OR namespace = $1"
            " ORDER BY namespace, kind, name",
            namespace,
        )
        return [SecretInfo(**row) for row in rows]

    async def value(self, namespace: str, name: str, kind: SecretKind = "secret") -> str | None:
        """The value, from the store, else (default namespace only) the environment."""
        row = await self.pool.fetchrow(
            "SELECT nonce, sealed, key_id FROM secrets"
            " WHERE kind = $1 AND namespace = $2 AND name = $3",
            kind, namespace, name,
        )  # fmt: skip
        if row is None:
            return environment_secret(kind, namespace, name)
        key = self._key()
        if row["key_id"] != key.id:
            raise SecretError(
                f"secret '{name}' of namespace '{namespace}' was sealed with another key"
                f" (key id {row['key_id']}, this one is {key.id})"
            )
        return key.open(kind, namespace, name, row["nonce"], row["sealed"])


def _noun(kind: SecretKind) -> str:
    return "webhook key" if kind == "webhook" else "secret"
