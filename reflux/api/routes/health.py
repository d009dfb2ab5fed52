"""`GET /health`: the API is up and its database answers (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from reflux.api.errors import ApiError

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/health", response_model=Health, responses={503: {"description": "degraded"}})
async def health(request: Request) -> Health:
    try:
        await request.app.state.ctx.pool.fetchval("SELECT 1")
    except Exception as exc:
        raise ApiError(503, f"the database does not answer: {exc}") from None
    return Health(status="ok", database="ok")
