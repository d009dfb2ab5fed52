"""Workflows: push a new version, list, show, versions, diff."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from infra import RegistryError, SpecError
from reflux.api.auth import Author, Viewer
from reflux.api.context import ApiContext, actor, ctx_of
from reflux.api.errors import ApiError
from registry import Token, WorkflowRegistry, WorkflowVersion, moved_message

router = APIRouter(prefix="/workflows", tags=["workflows"])


class PushRequest(BaseModel):
    source: str = Field(
        description="the workflow's YAML text (at most REFLUX_SOURCE_MAX_BYTES, 512 KiB)",
        max_length=4 * 1024 * 1024,  # the real bound is the setting, checked in bytes
    )


class PushResult(BaseModel):
    workflow_id: str
    version: int
    created: bool = Field(description="false: same content as the latest version")


class WorkflowSummary(BaseModel):
    id: str
    namespace: str
    description: str
    latest_version: int
    updated_at: datetime


class VersionInfo(BaseModel):
    workflow_id: str
    version: int
    spec_hash: str
    created_at: datetime
    created_by: str


class VersionDetail(VersionInfo):
    source: str


class Diff(BaseModel):
    workflow_id: str
    old: int
    new: int
    diff: str = Field(description="unified diff of the two sources; empty when the same")


async def _visible(ctx: ApiContext, token: Token, workflow_id: str) -> WorkflowRegistry:
    registry = WorkflowRegistry(ctx.pool, actor(token))
    namespace = await registry.namespace_of(workflow_id)
    if namespace is None or not token.sees(namespace):
        raise ApiError(404, f"unknown workflow '{workflow_id}'")
    return registry


@router.post("", response_model=PushResult, status_code=201, name="push_workflow",
             responses={200: {"model": PushResult, "description": "unchanged"}})  # fmt: skip
async def push(
    body: PushRequest, request: Request, response: Response, token: Author
) -> PushResult:
    """Validate and store a workflow as its next version (unchanged content stores nothing)."""
    ctx = ctx_of(request)
    from orchestrator import source_too_large, validate_text

    limit = ctx.settings.limits.source_max_bytes
    if (too_large := source_too_large(len(body.source.encode()), "<request>", limit)) is not None:
        raise ApiError(413, str(too_large))
    # parsing and checking a large source takes seconds of CPU: not on the event loop
    spec, problems = await asyncio.to_thread(
        validate_text, body.source, "<request>", await ctx.catalog(), limit
    )
    if spec is None:
        raise SpecError(problems)
    if not token.sees(spec.namespace):
        raise ApiError(403, f"the token may not write to namespace '{spec.namespace}'")
    registry = WorkflowRegistry(ctx.pool, actor(token))
    existing = await registry.namespace_of(spec.id)
    if existing is not None and existing != spec.namespace:
        raise _not_movable(token, spec.id, existing, spec.namespace)
    before = await _previous_cron_ids(registry, spec.id, existing is not None)
    try:
        pushed = await registry.push(spec.definition(body.source))
    except RegistryError:
        existing = await registry.namespace_of(spec.id)  # another push came first
        if existing is not None and existing != spec.namespace:
            raise _not_movable(token, spec.id, existing, spec.namespace) from None
        raise
    if not pushed.created:
        response.status_code = 200
    else:
        from orchestrator import announce_change, sync_schedules

        await sync_schedules(await ctx.temporal(), spec, ctx.settings.temporal.task_queue, before)
        await announce_change(await ctx.nats())
    return PushResult(workflow_id=spec.id, version=pushed.version.version, created=pushed.created)


def _not_movable(token: Token, workflow_id: str, existing: str, wanted: str) -> ApiError:
    """A push may not move a workflow to another namespace. A token that may not see the
    workflow's namespace is told nothing about it: not whose it is, not that it exists
    elsewhere; only that this id is not one it may push."""
    if token.sees(existing):
        return ApiError(409, moved_message(workflow_id, existing, wanted))
    return ApiError(
        409, f"workflow id '{workflow_id}' cannot be pushed with this token; choose another id"
    )


async def _previous_cron_ids(
    registry: WorkflowRegistry, workflow_id: str, exists: bool
) -> set[str]:
    from orchestrator import cron_ids

    if not exists:
        return set()
    return await asyncio.to_thread(cron_ids, (await registry.get(workflow_id)).source)


@router.get("", response_model=list[WorkflowSummary], name="list_workflows")
async def list_workflows(request: Request, token: Viewer) -> list[WorkflowSummary]:
    registry = WorkflowRegistry(ctx_of(request).pool, actor(token))
    return [
        WorkflowSummary(**vars(w)) for w in await registry.workflows() if token.sees(w.namespace)
    ]


def _info(v: WorkflowVersion) -> VersionInfo:
    return VersionInfo(workflow_id=v.workflow_id, version=v.version, spec_hash=v.spec_hash,
                       created_at=v.created_at, created_by=v.created_by)  # fmt: skip


@router.get("/{workflow_id}", response_model=VersionDetail, name="get_workflow")
async def get_workflow(
    workflow_id: str,
    request: Request,
    token: Viewer,
    version: int | None = Query(None, ge=1, description="default: the latest"),
) -> VersionDetail:
    registry = await _visible(ctx_of(request), token, workflow_id)
    stored = await registry.get(workflow_id, version)
    return VersionDetail(**_info(stored).model_dump(), source=stored.source)


@router.get("/{workflow_id}/versions", response_model=list[VersionInfo], name="workflow_versions")
async def versions(workflow_id: str, request: Request, token: Viewer) -> list[VersionInfo]:
    registry = await _visible(ctx_of(request), token, workflow_id)
    return [_info(v) for v in await registry.versions(workflow_id)]


@router.get("/{workflow_id}/diff", response_model=Diff, name="diff_workflow")
async def diff(
    workflow_id: str,
    request: Request,
    token: Viewer,
    old: int = Query(ge=1),
    new: int = Query(ge=1),
) -> Diff:
    registry = await _visible(ctx_of(request), token, workflow_id)
    text = await registry.diff(workflow_id, old, new)
    return Diff(workflow_id=workflow_id, old=old, new=new, diff=text)
