"""Who is calling: a bearer token, its role, and the namespace it may see.

Roles are ordered: viewer (read) < author (push workflows, start and control runs) <
reviewer (promote, deprecate, roll out nodes; accept proposals) < admin (manage tokens).
A token with a namespace sees that namespace's workflows, runs and traces only; what it
cannot see does not exist for it (404, never a hint).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from reflux.api.errors import ApiError
from registry import Role, Token

__all__ = ["Admin", "Author", "Reviewer", "Viewer", "caller"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def caller(role: Role) -> Any:
    """A dependency: the verified token of the request, which must hold `role`."""

    async def verified(request: Request) -> Token:
        ctx = request.app.state.ctx
        scheme, _, text = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not text.strip():
            client = request.client.host if request.client else "unknown"
            ctx.limiter.check(f"anonymous:{client}")
            raise ApiError(
                401,
                "a token is needed: send 'Authorization: Bearer rfx_…' "
                "(make one with `reflux tokens create`)",
                headers=_CHALLENGE,
            )
        token = await ctx.tokens.verify(text.strip())
        if token is None:
            client = request.client.host if request.client else "unknown"
            ctx.limiter.check(f"anonymous:{client}")
            raise ApiError(401, "unknown or revoked token", headers=_CHALLENGE)
        request.state.token = token
        ctx.limiter.check(f"token:{token.id}")
        if not token.allows(role):
            raise ApiError(403, f"this needs the {role} role; the token's role is {token.role}")
        return token

    return Depends(verified)


Viewer = Annotated[Token, caller("viewer")]
Author = Annotated[Token, caller("author")]
Reviewer = Annotated[Token, caller("reviewer")]
Admin = Annotated[Token, caller("admin")]
