"""What the traces say: figures per node version and workflow, and one run's events.
A token with a namespace sees that namespace's traces only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from infra import parse_duration
from reflux.api.auth import Viewer
from reflux.api.context import ctx_of
from reflux.api.errors import ApiError
from reflux.api.routes.runs import visible_run

router = APIRouter(tags=["traces"])


class Stats(BaseModel):
    nodes: list[dict[str, Any]]
    workflows: list[dict[str, Any]]
    failing_steps: list[dict[str, Any]]


@router.get("/stats", response_model=Stats, name="stats")
async def stats(
    request: Request,
    token: Viewer,
    since: str = Query("1h", description="how far back, e.g. 15m, 24h"),
    node: str | None = Query(None, description="only this node, e.g. http.request"),
    workflow: str | None = Query(None, description="only this workflow id"),
    label: list[str] = Query(  # noqa: B008
        [], description="only runs with this label, KEY:VALUE (repeatable: all must match)"
    ),
    include_shadow: bool = Query(False, description="count shadow runs (shadow=true) too"),
) -> Stats:
    """Per node version: count, error and retry rates, p50/p95/p99, cache hits, tokens,
    top errors, and each reported metric's count, mean, p50 and p95; per workflow: runs and
    duration percentiles; the most failing steps (the definitions are those of `reflux
    stats`). Runs labelled shadow=true are left out unless `include_shadow` or a `label`
    filter on `shadow` asks for them."""
    from reflection import query
    from reflection import stats as questions

    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise ApiError(422, f"since: {exc}") from None
    from orchestrator import parse_pairs

    labels = parse_pairs(label, ":", "label")  # a SpecError is a 422 naming the pair
    ctx = ctx_of(request)
    settings, nc = ctx.settings, await ctx.nats()
    scope: dict[str, Any] = {
        "node": node,
        "workflow": workflow,
        "namespace": token.namespace,
        "labels": labels,
        "include_shadow": include_shadow,
    }
    nodes = await query(settings, *questions.node_stats(seconds, **scope), nc=nc)
    flows = await query(settings, *questions.workflow_stats(seconds, **scope), nc=nc)
    failing = await query(settings, *questions.failing_steps(seconds, **scope), nc=nc)
    return Stats(
        nodes=_plain(nodes.records()),
        workflows=_plain(flows.records()),
        failing_steps=_plain(failing.records()),
    )


@router.get("/runs/{run_id}/traces", response_model=list[dict[str, Any]], name="run_traces")
async def run_traces(run_id: str, request: Request, token: Viewer) -> list[dict[str, Any]]:
    """Every trace event of the run (one per step attempt), oldest first."""
    from reflection import query
    from reflection import stats as questions

    ctx = ctx_of(request)
    await visible_run(ctx, token, run_id)
    result = await query(ctx.settings, *questions.run_traces(run_id), nc=await ctx.nats())
    return _plain(result.records())


def _plain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready rows: datetimes as ISO text, NaN (an empty group's ratio) as null."""
    import math
    from datetime import datetime

    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return [{k: value(v) for k, v in row.items()} for row in records]
