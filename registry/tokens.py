"""API tokens: `rfx_<id>_<secret>`, shown once at creation and stored as a SHA-256 of the
secret (the secret is 32 random bytes, so a fast hash is enough: there is nothing to
guess). A token has a role and, optionally, the one namespace it may see: a namespace's
name (as a workflow's `namespace:` is written), never "", which would read as none."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from infra import NotFoundError, RegistryError

__all__ = ["NAMESPACE_RE", "ROLES", "Role", "Token", "TokenStore", "check_namespace"]

Role = Literal["viewer", "author", "reviewer", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "author", "reviewer", "admin")
"""Each role may do what the ones before it may."""
PREFIX = "rfx"
NAMESPACE_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
"""A namespace's name: the format of a workflow's `namespace` (orchestrator.spec.WORKFLOW_ID)."""
LAST_USED_EVERY = timedelta(minutes=1)
"""`last_used_at` is kept to this precision: verifying a token writes at most this often."""


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    role: Role
    namespace: str | None
    """None: every namespace."""
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None

    def allows(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, namespace: str) -> bool:
        return self.namespace is None or self.namespace == namespace


def check_namespace(namespace: str) -> str:
    """`namespace` if it is a namespace's name; else a one-line RegistryError saying why."""
    if not NAMESPACE_RE.fullmatch(namespace):
        raise RegistryError(
            f"bad namespace {namespace!r}: use lowercase letters, digits, '.', '_' and '-',"
            " starting with a letter or digit"
        )
    return namespace


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_COLUMNS = "id, name, role, namespace, created_at, created_by, revoked_at, last_used_at"


class TokenStore:
    def __init__(self, pool: asyncpg.Pool, actor: str) -> None:
        self.pool = pool
        self.actor = actor

    async def create(
        self, role: Role, namespace: str | None = None, name: str = ""
    ) -> tuple[Token, str]:
        """A new token and its full text (not stored: only a hash of its secret is)."""
        if namespace is not None:
            check_namespace(namespace)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = await self.pool.fetchrow(
            "INSERT INTO api_tokens (id, name, role, namespace, secret_hash, created_by)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            token_id, name, role, namespace, _hash(secret), self.actor,
        )  # fmt: skip
        return _token(row), f"{PREFIX}_{token_id}_{secret}"

    async def verify(self, text: str) -> Token | None:
        """The live token `text` is, or None (unknown, malformed, wrong secret, revoked)."""
        prefix, _, rest = text.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != PREFIX or not token_id or not secret:
            return None
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, secret_hash FROM api_tokens WHERE id = $1 AND revoked_at IS NULL",
            token_id,
        )
        if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
            return None
        token = _token(row)
        last = token.last_used_at
        if last is None or datetime.now(UTC) - last > LAST_USED_EVERY:  # not a write per call
            await self.pool.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = $1", token_id
            )
        return token

    async def list(self, namespace: str | None = None) -> list[Token]:
        """Every token; with `namespace`, only the tokens scoped to it."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE $1::text IS NULL OR namespace = $1"
            " ORDER BY created_at",
            namespace,
        )
        return [_token(row) for row in rows]

    async def revoke(self, token_id: str, namespace: str | None = None) -> Token:
        """Revoke a token; with `namespace`, only one scoped to it (any other is unknown)."""
        row = await self.pool.fetchrow(
            f"UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
            f" AND ($2::text IS NULL OR namespace = $2) RETURNING {_COLUMNS}",
            token_id, namespace,
        )  # fmt: skip
        if row is None:
            raise NotFoundError(f"no token '{token_id}'")
        return _token(row)


def _token(row: asyncpg.Record) -> Token:
    return Token(**{k: row[k] for k in _COLUMNS.split(", ")})
