"""Runs: start a stored workflow, list, show with step states and outputs, cancel."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from infra import NotFoundError, redact
from orchestrator import StepResult
from reflux.api.auth import Author, Viewer
from reflux.api.context import ApiContext, actor, ctx_of
from reflux.api.errors import ApiError
from registry import Token
from registry import runs as ledger

router = APIRouter(prefix="/runs", tags=["runs"])

HEARTBEAT_S = 15.0


class StartRequest(BaseModel):
    workflow: str = Field(
        description="a stored workflow: `id` (the live version, or a rollout's) or `id@N`"
    )
    inputs: dict[str, Any] | None = Field(
        None, description="the run's inputs (a shadow run: the replayed run's, unless given)"
    )
    mutations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="graph mutations for this run only (update_params, set_policy,"
        " replace_node, add_step, remove_step), validated as a push is",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="labels on the run and its trace events"
    )
    shadow_of: str | None = Field(
        None, description="replay this run's inputs without performing a write"
    )


class Started(BaseModel):
    run_id: str
    workflow_id: str
    workflow_version: int
    status: str = "running"
    labels: dict[str, str] = Field(default_factory=dict)


class RunSummary(BaseModel):
    run_id: str
    workflow_id: str
    workflow_version: int | None
    namespace: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    started_by: str
    labels: dict[str, str] = Field(default_factory=dict)
    shadow_of: str | None = None


class RunDetail(RunSummary):
    paused: bool = False
    pins: dict[str, dict[str, str]]
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepResult] = Field(default_factory=dict)
    error: dict[str, Any] | None = None


def _summary(record: ledger.RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.id,
        "workflow_id": record.workflow_id,
        "workflow_version": record.workflow_version,
        "namespace": record.namespace,
        "status": record.status,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "started_by": record.started_by,
        "labels": record.labels,
        "shadow_of": record.shadow_of,
    }


async def visible_run(ctx: ApiContext, token: Token, run_id: str) -> ledger.RunRecord:
    """The run's ledger record, or 404 when there is none the token may see."""
    try:
        record = await ledger.get_run(ctx.pool, run_id)
    except NotFoundError:
        record = None
    if record is None or not token.sees(record.namespace):
        raise ApiError(404, f"no run '{run_id}'")
    return record


@router.post("", response_model=Started, status_code=201, name="start_run")
async def start(body: StartRequest, request: Request, token: Author) -> Started:
    """Start a run of a stored workflow version; it runs on, this returns at once. With
    `mutations`, `labels` or `shadow_of` it is a variant run of that version."""
    from orchestrator import launch
    from registry import WorkflowRegistry, parse_ref

    ctx = ctx_of(request)
    workflow_id, wanted = parse_ref(body.workflow)
    registry = WorkflowRegistry(ctx.pool, actor(token))
    namespace = await registry.namespace_of(workflow_id)
    if namespace is None or not token.sees(namespace):
        raise ApiError(404, f"unknown workflow '{workflow_id}'")
    if body.shadow_of is not None:
        await visible_run(ctx, token, body.shadow_of)
    launched = await launch(
        await ctx.temporal(), ctx.pool, ctx.settings, workflow_id, wanted,
        body.inputs if body.inputs is not None or body.shadow_of is None else None,
        mutations=body.mutations, labels=body.labels, actor=actor(token),
        shadow_of=body.shadow_of,
    )  # fmt: skip
    return Started(
        run_id=launched.handle.id,
        workflow_id=workflow_id,
        workflow_version=launched.version,
        labels=launched.labels,
    )


@router.get("", response_model=list[RunSummary], name="list_runs")
async def list_runs(
    request: Request,
    token: Viewer,
    workflow: str | None = Query(None, description="only this workflow id"),
    status: str | None = Query(None, pattern="^(running|completed|failed|cancelled)$"),
    namespace: str | None = Query(None),
    label: Annotated[
        list[str] | None, Query(description="only runs with this label, `key:value`; repeatable")
    ] = None,
    limit: int = Query(50, ge=1, le=500),
) -> list[RunSummary]:
    from orchestrator import parse_pairs

    if token.namespace is not None:
        if namespace not in (None, token.namespace):
            return []
        namespace = token.namespace
    labels = parse_pairs(label or [], ":", "label")
    records = await ledger.list_runs(
        ctx_of(request).pool, namespace=namespace, workflow_id=workflow, status=status,
        labels=labels, limit=limit,
    )  # fmt: skip
    return [RunSummary(**_summary(r)) for r in records]


@router.get("/{run_id}", response_model=RunDetail, name="get_run")
async def get_run(run_id: str, request: Request, token: Viewer) -> RunDetail:
    """The run as the ledger has it, with its steps' states and outputs from Temporal.
    Values under sensitive keys (password, token, authorization, api_key, …) read
    `[redacted]`, at any depth."""
    from orchestrator import live_state

    ctx = ctx_of(request)
    record = await visible_run(ctx, token, run_id)
    detail = RunDetail(**_summary(record), pins=record.pins, error=redact(record.error))
    state = await live_state(await ctx.temporal(), run_id)
    if state is not None:
        for step in state.steps.values():
            step.output = redact(step.output)
            if step.error is not None:
                step.error.details = redact(step.error.details)
        detail.steps = state.steps
        detail.outputs = redact(state.outputs)
        detail.paused = state.paused
        if state.status == "running":  # the ledger hears of the end a moment before Temporal
            detail.status, detail.ended_at = "running", None
    return detail


@router.get(
    "/{run_id}/events",
    name="run_events",
    response_class=StreamingResponse,
    responses={200: {"description": "Server-Sent Events: step.started, step.retried, "
                     "step.completed|failed|skipped|cancelled, run.finished (last)",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)  # fmt: skip
async def events(run_id: str, request: Request, token: Viewer) -> StreamingResponse:
    """Follow a run live; the stream ends after `run.finished`. Each event's `data` is JSON
    (type, run_id, step, at, attempt, status, error)."""
    from orchestrator import follow

    ctx = ctx_of(request)
    await visible_run(ctx, token, run_id)
    client = await ctx.temporal()

    async def stream() -> AsyncIterator[str]:
        events = follow(client, run_id).__aiter__()
        seq = 0
        upcoming = asyncio.ensure_future(events.__anext__())
        try:
            while True:
                done, _ = await asyncio.wait([upcoming], timeout=HEARTBEAT_S)
                if not done:
                    yield ": still running\n\n"  # keeps proxies from closing an idle stream
                    continue
                try:
                    event = upcoming.result()
                except StopAsyncIteration:
                    return
                seq += 1
                yield f"id: {seq}\nevent: {event.type}\ndata: {json.dumps(event.as_json())}\n\n"
                upcoming = asyncio.ensure_future(events.__anext__())
        finally:
            upcoming.cancel()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.post("/{run_id}/cancel", response_model=RunSummary, status_code=202, name="cancel_run")
async def cancel(run_id: str, request: Request, token: Author) -> RunSummary:
    """Ask a running run to stop: steps running are cancelled, steps not started are not."""
    from orchestrator import run_handle

    ctx = ctx_of(request)
    record = await visible_run(ctx, token, run_id)
    if record.status != "running":
        raise ApiError(409, f"run '{run_id}' is already {record.status}")
    await run_handle(await ctx.temporal(), run_id).cancel()
    return RunSummary(**_summary(record))


class RedriveRequest(BaseModel):
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="step id -> params to set in its `with` (those steps run again)",
    )


async def _signal(request: Request, token: Token, run_id: str, signal: str) -> RunSummary:
    from orchestrator import run_handle

    ctx = ctx_of(request)
    record = await visible_run(ctx, token, run_id)
    if record.status != "running":
        raise ApiError(409, f"run '{run_id}' is {record.status}: only a running run can {signal}")
    await run_handle(await ctx.temporal(), run_id).signal(signal)
    return RunSummary(**_summary(record))


@router.post("/{run_id}/pause", response_model=RunSummary, status_code=202, name="pause_run")
async def pause(run_id: str, request: Request, token: Author) -> RunSummary:
    """No new step starts until resumed; steps already running finish."""
    return await _signal(request, token, run_id, "pause")


@router.post("/{run_id}/resume", response_model=RunSummary, status_code=202, name="resume_run")
async def resume(run_id: str, request: Request, token: Author) -> RunSummary:
    return await _signal(request, token, run_id, "resume")


class RerunRequest(RedriveRequest):
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="inputs to change; the others are the run's own"
    )


@router.post("/{run_id}/redrive", response_model=Started, status_code=201, name="redrive_run")
async def redrive(run_id: str, body: RedriveRequest, request: Request, token: Author) -> Started:
    """Run a failed run again from where it failed, as a new run: its completed steps are
    taken as they are (not run again); the others run with the node versions pinned now
    (so a fixed node version is picked up) and `overrides` applied to their params."""
    return await _again(request, token, run_id, body.overrides, {}, redrive=True)


@router.post("/{run_id}/rerun", response_model=Started, status_code=201, name="rerun_run")
async def rerun(run_id: str, body: RerunRequest, request: Request, token: Author) -> Started:
    """Run the same workflow version again, from the start, with the run's inputs (those in
    `inputs` changed) and `overrides` applied to step params."""
    return await _again(request, token, run_id, body.overrides, body.inputs, redrive=False)


async def _again(
    request: Request,
    token: Token,
    run_id: str,
    overrides: dict[str, dict[str, Any]],
    inputs: dict[str, Any],
    *,
    redrive: bool,
) -> Started:
    from orchestrator import (
        ENGINE_LABELS,
        apply_mutations,
        apply_overrides,
        launch,
        live_state,
        load_version,
        parse_mutations,
        redrive_of,
    )

    ctx = ctx_of(request)
    record = await visible_run(ctx, token, run_id)
    if redrive and record.status != "failed":
        raise ApiError(409, f"run '{run_id}' is {record.status}: only a failed run is re-driven")
    if record.workflow_version is None:
        raise ApiError(409, f"run '{run_id}' ran a file, not a stored version: push it, run it")
    if record.shadow_of is not None:  # run again, its writes would be made
        raise ApiError(409, f"run '{run_id}' is a shadow replay: start another with shadow_of")
    client = await ctx.temporal()
    state = await live_state(client, run_id)
    if state is None:
        raise ApiError(409, f"Temporal no longer has run '{run_id}' (past its retention)")
    loaded = await load_version(ctx.pool, record.workflow_id, record.workflow_version)
    # the variant it was, with the overrides: validated as a push is (a 422 says why)
    ran = parse_mutations(record.mutations) if record.mutations else []
    spec = (
        apply_mutations(loaded.spec, ran, loaded.catalog, loaded.stored.ref) if ran else loaded.spec
    )
    spec = apply_overrides(spec, overrides, loaded.catalog, loaded.stored.ref)
    again = redrive_of(run_id, state.steps, spec, overrides) if redrive else None
    given = {k: v for k, v in (await original_inputs(client, run_id)).items() if v is not None}
    labels = {k: v for k, v in record.labels.items() if k not in ENGINE_LABELS}
    launched = await launch(
        client, ctx.pool, ctx.settings, record.workflow_id, record.workflow_version,
        {**given, **inputs}, mutations=[*record.mutations, *override_mutations(overrides)],
        labels=labels, actor=actor(token), redrive=again,
    )  # fmt: skip
    return Started(
        run_id=launched.handle.id,
        workflow_id=spec.id,
        workflow_version=launched.version,
        labels=launched.labels,
    )


async def original_inputs(client: Any, run_id: str) -> dict[str, Any]:
    from orchestrator import original_request

    return (await original_request(client, run_id)).inputs


def override_mutations(overrides: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """`overrides` (step -> params, each replacing that param whole) as graph mutations:
    a mapping-valued param is removed first, so the override replaces it rather than
    merging into it."""
    found: list[dict[str, Any]] = []
    for step, params in overrides.items():
        nested = {key: None for key, value in params.items() if isinstance(value, dict)}
        if nested:
            found.append({"op": "update_params", "step": step, "params": nested})
        found.append({"op": "update_params", "step": step, "params": params})
    return found
