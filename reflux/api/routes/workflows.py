"""Workflows: push a new version (live, or a candidate), list, show, versions, diff; promote
a version to live and roll one out to a share of new runs. Changing which version is live
brings the workflow's cron Schedules and event listeners in step with the live version."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from infra import RegistryError, SpecError
from reflux.api.auth import Author, Viewer
from reflux.api.context import ApiContext, actor, ctx_of
from reflux.api.errors import ApiError
from registry import Token, WorkflowRegistry, WorkflowRollout, WorkflowVersion, moved_message

router = APIRouter(prefix="/workflows", tags=["workflows"])


class PushRequest(BaseModel):
    source: str = Field(
        description="the workflow's YAML text (at most REFLUX_SOURCE_MAX_BYTES, 512 KiB)",
        max_length=4 * 1024 * 1024,  # the real bound is the setting, checked in bytes
    )
    candidate: bool = Field(False, description="store it without making it live (promote it later)")


class PushResult(BaseModel):
    workflow_id: str
    version: int
    created: bool = Field(description="false: same content as the live or newest version")


class WorkflowSummary(BaseModel):
    id: str
    namespace: str
    description: str
    latest_version: int
    live_version: int
    updated_at: datetime


class VersionInfo(BaseModel):
    workflow_id: str
    version: int
    spec_hash: str
    created_at: datetime
    created_by: str
    live: bool = Field(False, description="what new runs get; its triggers are in force")
    candidate: bool = Field(False, description="pushed as a candidate, not live since")
    rollout: int | None = Field(None, description="the percent of new runs its rollout takes")
    note: str = Field("", description="why it was pushed, e.g. the proposal it applies")


class VersionDetail(VersionInfo):
    source: str


class PromoteRequest(BaseModel):
    version: int = Field(ge=1, description="the version to make live")


class PromoteResult(BaseModel):
    workflow_id: str
    version: int
    previous: int | None = Field(description="the version live before")
    changed: bool = Field(description="false: it was live already")
    rollout_ended: int | None = Field(
        None, description="the percent of the version's rollout, which the promotion ended"
    )


class RolloutRequest(BaseModel):
    version: int = Field(ge=1, description="a version other than the live one")
    percent: int = Field(ge=0, le=100, description="share of new runs; 0 ends the rollout")


class RolloutState(BaseModel):
    version: int
    percent: int


class RolloutResult(BaseModel):
    workflow_id: str
    version: int
    percent: int = Field(description="0: the rollout ended")
    previous: RolloutState | None = Field(description="the rollout before this change")


class Diff(BaseModel):
    workflow_id: str
    old: int
    new: int
    diff: str = Field(description="unified diff of the two sources; empty when the same")


class MutateRequest(BaseModel):
    base: int | None = Field(None, ge=1, description="the version to change (default: live)")
    mutations: list[dict[str, Any]] = Field(
        min_length=1,
        description="graph mutations: update_params, set_policy, replace_node, add_step,"
        " remove_step",
    )
    candidate: bool = Field(False, description="store it as a candidate: live stays as it is")


class MutateResult(BaseModel):
    workflow_id: str
    base: int
    version: int
    created: bool
    candidate: bool
    live: bool = Field(description="the new version is live now")
    diff: str = Field(description="unified diff from the base version's YAML")


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
        pushed = await registry.push(spec.definition(body.source), candidate=body.candidate)
    except RegistryError:
        existing = await registry.namespace_of(spec.id)  # another push came first
        if existing is not None and existing != spec.namespace:
            raise _not_movable(token, spec.id, existing, spec.namespace) from None
        raise
    if not pushed.created:
        response.status_code = 200
    if pushed.went_live:  # a candidate's triggers wait for its promotion
        await _follow_live(ctx, spec, before)
    return PushResult(workflow_id=spec.id, version=pushed.version.version, created=pushed.created)


async def _follow_live(ctx: ApiContext, spec: Any, before: set[str]) -> None:
    """Cron Schedules to the live version's triggers (`spec`), event listeners reloaded."""
    from orchestrator import announce_change, sync_schedules

    await sync_schedules(await ctx.temporal(), spec, ctx.settings.temporal.task_queue, before)
    await announce_change(await ctx.nats())


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
    return await asyncio.to_thread(cron_ids, (await registry.live(workflow_id)).source)


@router.get("", response_model=list[WorkflowSummary], name="list_workflows")
async def list_workflows(request: Request, token: Viewer) -> list[WorkflowSummary]:
    registry = WorkflowRegistry(ctx_of(request).pool, actor(token))
    return [
        WorkflowSummary(**vars(w)) for w in await registry.workflows() if token.sees(w.namespace)
    ]


def _info(v: WorkflowVersion, rollout: WorkflowRollout | None = None) -> VersionInfo:
    percent = rollout.percent if rollout is not None and rollout.version == v.version else None
    return VersionInfo(workflow_id=v.workflow_id, version=v.version, spec_hash=v.spec_hash,
                       created_at=v.created_at, created_by=v.created_by, live=v.live,
                       candidate=v.candidate, rollout=percent, note=v.note)  # fmt: skip


@router.get("/{workflow_id}", response_model=VersionDetail, name="get_workflow")
async def get_workflow(
    workflow_id: str,
    request: Request,
    token: Viewer,
    version: int | None = Query(None, ge=1, description="default: the live version"),
) -> VersionDetail:
    registry = await _visible(ctx_of(request), token, workflow_id)
    stored = await registry.get(workflow_id, version)
    return VersionDetail(**_info(stored).model_dump(), source=stored.source)


@router.get("/{workflow_id}/versions", response_model=list[VersionInfo], name="workflow_versions")
async def versions(workflow_id: str, request: Request, token: Viewer) -> list[VersionInfo]:
    """Every version, oldest first: which is live, which are candidates, the rollout's share."""
    registry = await _visible(ctx_of(request), token, workflow_id)
    versions = await registry.versions(workflow_id)
    rollout = await registry.rollout(workflow_id)
    return [_info(v, rollout) for v in versions]


class HistoryEntry(BaseModel):
    version: int
    action: str = Field(
        description="pushed, promoted, rollout_started, rollout_changed, rollout_ended"
    )
    detail: dict[str, Any]
    actor: str
    at: datetime


@router.get("/{workflow_id}/history", response_model=list[HistoryEntry], name="workflow_history")
async def history(workflow_id: str, request: Request, token: Viewer) -> list[HistoryEntry]:
    """Every change to the workflow's versions, oldest first: who did what, and when."""
    registry = await _visible(ctx_of(request), token, workflow_id)
    return [
        HistoryEntry(version=e.version, action=e.action, detail=e.detail, actor=e.actor, at=e.at)
        for e in await registry.events(workflow_id)
    ]


@router.post("/{workflow_id}/promote", response_model=PromoteResult, name="promote_workflow")
async def promote(
    workflow_id: str, body: PromoteRequest, request: Request, token: Author
) -> PromoteResult:
    """Make a version live (any stored one: a rollback too). Its cron triggers become the
    workflow's Schedules and its event triggers are listened to; a rollout of it ends.
    A version that no longer validates (a node it names is gone) is refused."""
    ctx = ctx_of(request)
    registry = await _visible(ctx, token, workflow_id)
    from orchestrator import validate_text

    stored = await registry.get(workflow_id, body.version)
    spec, problems = await asyncio.to_thread(
        validate_text, stored.source, stored.ref, await ctx.catalog(),
        ctx.settings.limits.source_max_bytes,
    )  # fmt: skip
    if spec is None:
        raise SpecError(problems)
    before = await _previous_cron_ids(registry, workflow_id, True)
    promoted = await registry.promote(workflow_id, body.version)
    if promoted.changed:
        await _follow_live(ctx, spec, before)
    return PromoteResult(workflow_id=workflow_id, version=promoted.version,
                         previous=promoted.previous, changed=promoted.changed,
                         rollout_ended=promoted.rollout_ended)  # fmt: skip


@router.post("/{workflow_id}/mutate", response_model=MutateResult, status_code=201,
             name="mutate_workflow")  # fmt: skip
async def mutate(
    workflow_id: str, body: MutateRequest, request: Request, response: Response, token: Author
) -> MutateResult:
    """Store a version with graph mutations applied as the workflow's next version: its
    YAML keeps the author's comments and layout, and is validated as a push is."""
    from orchestrator import revise

    ctx = ctx_of(request)
    registry = await _visible(ctx, token, workflow_id)
    before = await _previous_cron_ids(registry, workflow_id, True)
    revision = await revise(
        ctx.pool, actor(token), workflow_id, body.base, body.mutations, candidate=body.candidate
    )
    if not revision.created:
        response.status_code = 200
    if revision.went_live:
        await _follow_live(ctx, revision.spec, before)
    return MutateResult(workflow_id=workflow_id, base=revision.base, version=revision.version,
                        created=revision.created, candidate=revision.candidate,
                        live=revision.went_live, diff=revision.diff)  # fmt: skip


@router.put("/{workflow_id}/rollout", response_model=RolloutResult, name="rollout_workflow")
async def rollout(
    workflow_id: str, body: RolloutRequest, request: Request, token: Author
) -> RolloutResult:
    """Send `percent` of the workflow's new runs to `version` instead of the live one (0
    ends its rollout). One rollout per workflow: a new one replaces the old."""
    from orchestrator import load_version

    ctx = ctx_of(request)
    registry = await _visible(ctx, token, workflow_id)
    if body.percent > 0:  # a version that no longer validates would fail its share of runs
        await load_version(ctx.pool, workflow_id, body.version)
    previous = await registry.set_rollout(workflow_id, body.version, body.percent)
    was = RolloutState(version=previous.version, percent=previous.percent) if previous else None
    return RolloutResult(workflow_id=workflow_id, version=body.version, percent=body.percent,
                         previous=was)  # fmt: skip


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
