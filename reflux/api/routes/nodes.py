"""Nodes: the catalog, one node's versions and history, and the reviewer's changes
(promote, deprecate, roll out). Node versions are global, shared by every namespace, so
changing one needs a token without a namespace."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from reflux.api.auth import Reviewer, Viewer
from reflux.api.context import actor, ctx_of
from reflux.api.errors import ApiError
from registry import Token

router = APIRouter(prefix="/nodes", tags=["nodes"])


class VersionOut(BaseModel):
    version: str
    status: str
    manifest: dict[str, Any]
    changelog: str
    created_at: datetime
    updated_at: datetime
    updated_by: str


class RolloutOut(BaseModel):
    version: str
    percent: int


class NodeOut(BaseModel):
    name: str
    description: str
    tags: list[str]
    versions: list[VersionOut]
    rollout: RolloutOut | None = None


class EventOut(BaseModel):
    version: str
    action: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]
    actor: str
    at: datetime


class NodeDetail(NodeOut):
    events: list[EventOut]


class PromoteRequest(BaseModel):
    to: Literal["staging", "production"]
    force: bool = Field(False, description="skip a stage (draft straight to production)")
    note: str = ""


class DeprecateRequest(BaseModel):
    note: str = ""


class RolloutRequest(BaseModel):
    percent: int = Field(ge=0, le=100, description="share of new runs; 0 stops the rollout")


class ChangeOut(BaseModel):
    name: str
    version: str
    before: str
    after: str
    changed: bool


def _global(token: Token) -> None:
    if token.namespace is not None:
        raise ApiError(
            403, "node versions are shared by every namespace: changing one needs a token"
            f" without a namespace (this one is scoped to '{token.namespace}')",
        )  # fmt: skip


def _registry(request: Request, token: Token) -> Any:
    from registry import NodeRegistry

    ctx = ctx_of(request)
    return NodeRegistry(ctx.pool, actor(token))


def _node(node: Any) -> dict[str, Any]:
    return {
        "name": node.name,
        "description": node.description,
        "tags": node.tags,
        "versions": [
            VersionOut(**{k: getattr(v, k) for k in VersionOut.model_fields}) for v in node.versions
        ],  # fmt: skip
        "rollout": RolloutOut(version=node.rollout.version, percent=node.rollout.percent)
        if node.rollout
        else None,
    }


def _change(change: Any) -> ChangeOut:
    return ChangeOut(name=change.name, version=change.version, before=change.before,
                     after=change.after, changed=change.changed)  # fmt: skip


@router.get("", response_model=list[NodeOut], name="list_nodes")
async def list_nodes(request: Request, token: Viewer) -> list[NodeOut]:
    return [NodeOut(**_node(n)) for n in await _registry(request, token).nodes()]


@router.get("/{name}", response_model=NodeDetail, name="get_node")
async def get_node(name: str, request: Request, token: Viewer) -> NodeDetail:
    node = await _registry(request, token).show(name)
    events = [EventOut(**vars(e)) for e in node.events]
    return NodeDetail(**_node(node), events=events)


@router.post("/{name}/versions/{version}/promote", response_model=ChangeOut, name="promote_node")
async def promote(
    name: str, version: str, body: PromoteRequest, request: Request,
    token: Reviewer,
) -> ChangeOut:  # fmt: skip
    _global(token)
    change = await _registry(request, token).promote(
        name, version, body.to, force=body.force, note=body.note
    )
    return _change(change)


@router.post(
    "/{name}/versions/{version}/deprecate", response_model=ChangeOut, name="deprecate_node"
)
async def deprecate(
    name: str, version: str, body: DeprecateRequest, request: Request,
    token: Reviewer,
) -> ChangeOut:  # fmt: skip
    _global(token)
    return _change(await _registry(request, token).deprecate(name, version, note=body.note))


@router.put("/{name}/versions/{version}/rollout", response_model=RolloutOut, name="rollout_node")
async def rollout(
    name: str, version: str, body: RolloutRequest, request: Request,
    token: Reviewer,
) -> RolloutOut:  # fmt: skip
    """Send `percent` of new runs to this version (the rest keep the production one)."""
    _global(token)
    await _registry(request, token).rollout(name, version, body.percent)
    return RolloutOut(version=version, percent=body.percent)
