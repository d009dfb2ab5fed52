"""The FastAPI application: `create_app(settings)`; `serve(settings)` runs it with uvicorn
(`reflux api`, started by `reflux up`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from infra import Settings
from reflux.api.context import ApiContext
from reflux.api.errors import ErrorBody, install_handlers
from reflux.api.guards import BodyLimit, RateLimiter
from reflux.api.routes import (
    health,
    hooks,
    nodes,
    proposals,
    runs,
    secrets,
    tokens,
    traces,
    workflows,
)
from registry import TokenStore, audit

__all__ = ["create_app", "serve"]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from infra import addresses, create_pool

        pool = await create_pool(  # min 0: the API starts, and answers 503, with PostgreSQL down
            addresses(settings).database, min_size=0, max_size=settings.api.pool_size
        )
        limiter = RateLimiter(settings.api.rate_limit, settings.api.burst)
        app.state.ctx = ApiContext(settings, pool, TokenStore(pool, settings.user), limiter)
        try:
            yield
        finally:
            await app.state.ctx.close()
            await pool.close()

    app = FastAPI(
        title="Reflux",
        version="1",
        description="Workflows, runs, nodes and traces of a Reflux platform. Every endpoint "
        "but /health needs `Authorization: Bearer <token>` (`reflux tokens create`).",
        lifespan=lifespan,
        responses={
            code: {"model": ErrorBody, "description": text}
            for code, text in (
                (400, "the request cannot be parsed, or the registry refused it"),
                (401, "no token, or an unknown or revoked one"),
                (403, "the token's role or namespace does not allow this"),
                (404, "no such resource (or not in the token's namespace)"),
                (409, "the resource's state does not allow this"),
                (413, "the request body is too large"),
                (422, "the request is invalid"),
                (429, "too many requests; see Retry-After"),
                (503, "a service the API needs is unavailable"),
            )
        },
    )
    install_handlers(app)
    app.middleware("http")(_audit)
    app.add_middleware(
        BodyLimit, limit=settings.api.max_body_bytes, max_depth=settings.limits.input_max_depth
    )
    for module in (health, workflows, runs, traces, nodes, tokens, secrets, hooks, proposals):
        app.include_router(module.router)
    return app


async def _audit(request: Request, call_next: Callable[[Request], Any]) -> Response:
    """Every mutating call goes to the audit log: who, what, when, and how it ended."""
    if request.method not in MUTATING:
        return await call_next(request)
    status = 500
    try:
        response: Response = await call_next(request)
        status = response.status_code
        return response
    finally:
        token = getattr(request.state, "token", None)
        route = request.scope.get("route")
        await audit.record(
            request.app.state.ctx.pool,
            token_id=token.id if token else None,
            role=token.role if token else None,
            namespace=token.namespace if token else None,
            method=request.method,
            path=request.url.path,
            action=getattr(route, "name", "unknown"),
            status=status,
        )


async def serve(settings: Settings, on_ready: Callable[[], None] = lambda: None) -> None:
    import uvicorn

    config = uvicorn.Config(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        on_ready()
    await task
