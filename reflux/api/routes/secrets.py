"""Secrets (admin): set, list (names and scopes, never values), delete. A token scoped to a
namespace manages that namespace's secrets only; every call is in the audit log (the
name, never the value). A namespace, asked for or the token's, is a namespace's name: a
token stored with "" by an older version manages nothing, and lists nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from infra import DEFAULT_NAMESPACE, RegistryError, SecretError, secrets_key
from reflux.api.auth import Admin
from reflux.api.context import actor, ctx_of
from reflux.api.errors import ApiError
from registry import SecretStore, Token, check_name, check_namespace

router = APIRouter(prefix="/secrets", tags=["secrets"])

Kind = Literal["secret", "webhook"]


class SetRequest(BaseModel):
    value: str = Field(max_length=64 * 1024, description="never shown again; 4+ characters")
    namespace: str | None = Field(None, description="default: the token's, else 'default'")
    kind: Kind = Field("secret", description="webhook: a webhook signing key")


class SecretOut(BaseModel):
    name: str
    namespace: str
    kind: Kind
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


class SetResult(BaseModel):
    name: str
    namespace: str
    kind: Kind
    created: bool


def _namespace(token: Token, asked: str | None) -> str:
    """The namespace a call is about: the one asked for, else the token's, else the default.
    Always a namespace's name ("" is none: it would read as "every namespace")."""
    if asked is not None:
        namespace = asked
    else:
        namespace = token.namespace if token.namespace is not None else DEFAULT_NAMESPACE
    try:
        check_namespace(namespace)
    except RegistryError as exc:
        raise ApiError(422, f"namespace: {exc}") from None
    if not token.sees(namespace):
        raise ApiError(403, f"the token may not manage secrets of namespace '{namespace}'")
    return namespace


def _store(request: Request, token: Token, *, sealing: bool) -> SecretStore:
    ctx = ctx_of(request)
    key = None
    if sealing:
        try:
            key = secrets_key(ctx.settings)
        except SecretError as exc:
            raise ApiError(503, f"the API cannot seal secrets: {exc}") from None
    return SecretStore(ctx.pool, key, actor(token))


def _name(name: str) -> str:
    try:
        return check_name(name)
    except SecretError as exc:
        raise ApiError(422, str(exc)) from None


@router.put("/{name}", response_model=SetResult, name="set_secret")
async def set_secret(name: str, body: SetRequest, request: Request, token: Admin) -> SetResult:
    """Store a secret's value (replacing any), sealed; it is never returned."""
    namespace = _namespace(token, body.namespace)
    store = _store(request, token, sealing=True)
    try:
        created = await store.set(namespace, _name(name), body.value, body.kind)
    except SecretError as exc:
        raise ApiError(422, str(exc)) from None
    return SetResult(name=name, namespace=namespace, kind=body.kind, created=created)


@router.get("", response_model=list[SecretOut], name="list_secrets")
async def list_secrets(
    request: Request, token: Admin, namespace: Annotated[str | None, Query()] = None
) -> list[SecretOut]:
    """Names, kinds and scopes, with who changed them when: never a value."""
    scoped = namespace is not None or token.namespace is not None
    scope = _namespace(token, namespace) if scoped else None  # None: a global token, every one
    found = await _store(request, token, sealing=False).list(scope)
    return [SecretOut(**vars(s)) for s in found]


@router.delete("/{name}", response_model=SetResult, name="delete_secret")
async def delete_secret(
    name: str,
    request: Request,
    token: Admin,
    namespace: Annotated[str | None, Query()] = None,
    kind: Annotated[Kind, Query()] = "secret",
) -> SetResult:
    scope = _namespace(token, namespace)
    await _store(request, token, sealing=False).delete(scope, _name(name), kind)
    return SetResult(name=name, namespace=scope, kind=kind, created=False)
