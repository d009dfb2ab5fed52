"""Tokens (admin): create (the text is shown once), list, revoke.

A token scoped to a namespace never reaches past it: it mints only tokens of its own
namespace and of at most its own role, lists only those, and revokes only those (any
other token is as unknown to it as one that never was). A namespace is a namespace's name,
never "": that would read as "every namespace" wherever a test is for truth."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from infra import RegistryError
from reflux.api.auth import Admin
from reflux.api.context import ctx_of
from reflux.api.errors import ApiError
from registry import Role, Token, TokenStore, check_namespace

router = APIRouter(prefix="/tokens", tags=["tokens"])


class CreateRequest(BaseModel):
    role: Role
    namespace: str | None = Field(
        None, description="the one namespace it sees (its name); none: all"
    )
    name: str = Field("", max_length=200)


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    namespace: str | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


class Created(TokenOut):
    token: str = Field(description="the token itself; shown this once, stored only hashed")


def _store(request: Request, token: Token) -> TokenStore:
    ctx = ctx_of(request)
    return TokenStore(ctx.pool, f"token:{token.name or token.id}")


@router.post("", response_model=Created, status_code=201, name="create_token")
async def create(body: CreateRequest, request: Request, token: Admin) -> Created:
    if body.namespace is not None:
        try:
            check_namespace(body.namespace)
        except RegistryError as exc:
            raise ApiError(422, f"namespace: {exc}") from None
    if token.namespace is not None and body.namespace != token.namespace:
        raise ApiError(
            403, f"a token of namespace '{token.namespace}' may create tokens of that namespace"
            f" only: send \"namespace\": \"{token.namespace}\""
        )  # fmt: skip
    if not token.allows(body.role):
        raise ApiError(403, f"a token may not create a role above its own ({token.role})")
    made, text = await _store(request, token).create(body.role, body.namespace, body.name)
    return Created(**vars(made), token=text)


@router.get("", response_model=list[TokenOut], name="list_tokens")
async def list_tokens(request: Request, token: Admin) -> list[TokenOut]:
    return [TokenOut(**vars(t)) for t in await _store(request, token).list(token.namespace)]


@router.delete("/{token_id}", response_model=TokenOut, name="revoke_token")
async def revoke(token_id: str, request: Request, token: Admin) -> TokenOut:
    return TokenOut(**vars(await _store(request, token).revoke(token_id, token.namespace)))
