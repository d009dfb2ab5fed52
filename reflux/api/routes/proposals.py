"""Proposals and the Critic over HTTP: list, show and create proposals, ask a proposal's
lifecycle to validate, accept or reject it, and run the Critic's scan now.

The same operations `reflux proposals …` and `reflux critic run` do locally, under the API's
roles: viewers read, authors create, validate and run the Critic, reviewers accept and
reject, and only an admin may force an accept. A token with a namespace sees that
namespace's proposals only; another namespace's proposal or workflow is not found (404),
never hinted at. A request is checked against the proposal's status at once (a refusal is a
409 with one line), then signalled to the lifecycle workflow, which stays the one writer of
the status: the answer is 202 with the proposal as it was; follow it at `Location`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from evolution import KINDS, STATUSES, Proposal, ProposalStore, ask, create, run_critic
from evolution import Request as ProposalRequest
from infra import ConfigError, NotFoundError, parse_duration
from reflux.api.auth import Author, Reviewer, Viewer
from reflux.api.context import ApiContext, actor, ctx_of
from reflux.api.errors import ApiError
from registry import Token, WorkflowRegistry

MAX_TITLE = 300
MAX_NOTE = 2000
MAX_DIAGNOSIS = 10_000
MAX_OPS = 64
"""The most operations one proposal's mutation may hold (orchestrator's limit too)."""
MAX_ID = 200
"""The longest workflow or proposal id a request may name."""
MAX_RUNS = 10_000
"""The most runs per arm a validation may ask for."""
MAX_SINCE = timedelta(days=31)
"""How far back one Critic scan may read the traces."""
LIST_MAX = 200
"""The most proposals one list answers (the catalog's own bound)."""

MUTATION_EXAMPLE = [{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 7}}]

_proposals = APIRouter(prefix="/proposals", tags=["proposals"])
_critic = APIRouter(prefix="/critic", tags=["proposals"])
router = APIRouter()
"""Both: what the application includes."""

ProposalId = Annotated[str, Path(max_length=MAX_ID, description="e.g. prop-7f3a9c")]


class NewProposal(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "workflow_id": "orders",
                    "title": "Retry fetch up to 7 times",
                    "mutation": MUTATION_EXAMPLE,
                    "diagnosis": "fetch fails with a transient 503 about half the time",
                }
            ]
        }
    )

    workflow_id: str = Field(min_length=1, max_length=MAX_ID)
    title: str = Field(max_length=MAX_TITLE, description="one line: what, and why")
    mutation: list[dict[str, Any]] | dict[str, Any] = Field(
        description="graph mutations as `POST /workflows/{id}/mutate` takes them (update_params,"
        " set_policy, replace_node, add_step, remove_step), or node operations"
        ' ({"op": "rollout", "node", "version", "percent"}, "deprecate"); one object is a'
        f" list of one; at most {MAX_OPS}",
    )
    diagnosis: str = Field("", max_length=MAX_DIAGNOSIS, description="why, in a few sentences")
    kind: str | None = Field(
        None,
        description="default: inferred from the mutation",
        json_schema_extra={"enum": [*KINDS, None]},
    )

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        title = " ".join(value.split())
        if not title:
            raise PydanticCustomError("title", "a proposal needs a title")
        return title

    @field_validator("mutation", mode="before")
    @classmethod
    def _ops(cls, value: Any) -> list[Any]:
        ops = value if isinstance(value, list) else [value]
        if not ops or len(ops) > MAX_OPS or not all(isinstance(op, dict) for op in ops):
            raise PydanticCustomError(
                "mutation", f"an object or a list of 1 to {MAX_OPS} objects, each with an 'op'"
            )
        return ops

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str | None) -> str | None:
        if value is not None and value not in KINDS:
            raise PydanticCustomError(
                "kind", "unknown kind {kind!r} (one of {kinds})",
                {"kind": value, "kinds": ", ".join(KINDS)},
            )  # fmt: skip
        return value


class ValidateBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"mode": "shadow", "runs": 40}]})

    mode: Literal["shadow", "canary"] | None = Field(
        None, description="default: shadow, or canary when the change touches a write step"
    )
    runs: int | None = Field(
        None, ge=1, le=MAX_RUNS, description="runs per arm (default REFLUX_EVOLUTION_SAMPLES)"
    )


class AcceptBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"note": "looks right"}]})

    note: str = Field("", max_length=MAX_NOTE, description="why (required with force)")
    force: bool = Field(False, description="admins: accept what did not pass validation")


class RejectBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"note": "the 503s came from a partner outage"}]}
    )

    note: str = Field(max_length=MAX_NOTE, description="why it is turned down")

    @field_validator("note")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("note", "a reject needs a note saying why")
        return value


class CriticScan(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"workflow": "orders", "since": "1h"}]}
    )

    workflow: str | None = Field(None, max_length=MAX_ID, description="only this workflow")
    since: str | None = Field(
        None, max_length=32, description="how far back, e.g. 1h (default REFLUX_CRITIC_WINDOW)"
    )

    @field_validator("since")
    @classmethod
    def _since(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise PydanticCustomError("since", str(exc)) from None
        if not 0 < seconds <= MAX_SINCE.total_seconds():
            raise PydanticCustomError("since", f"must be more than 0 and at most {MAX_SINCE.days}d")
        return value


class CriticFindings(BaseModel):
    proposals: list[Proposal] = Field(description="new or updated by this scan")
    errors: list[str] = Field(description="detectors that failed (the others still ran)")


async def _visible_workflow(ctx: ApiContext, token: Token, workflow_id: str) -> None:
    namespace = await WorkflowRegistry(ctx.pool, actor(token)).namespace_of(workflow_id)
    if namespace is None or not token.sees(namespace):
        raise ApiError(404, f"unknown workflow '{workflow_id}'")


async def _visible(ctx: ApiContext, token: Token, proposal_id: str) -> Proposal:
    """The proposal, or 404 when there is none the token may see."""
    return await ProposalStore(ctx.pool).get(proposal_id, token.namespace)


async def _ask(
    request: Request, response: Response, token: Token, proposal_id: str, action: str,
    **fields: Any,
) -> Proposal:  # fmt: skip
    """Send `action` to the proposal's lifecycle, checked first (LifecycleError: 409)."""
    ctx = ctx_of(request)
    wanted = ProposalRequest(action=action, actor=actor(token), role=token.role, **fields)
    proposal = await ask(
        await ctx.temporal(), ctx.pool, ctx.settings, proposal_id, wanted,
        namespace=token.namespace,
    )  # fmt: skip
    response.headers["Location"] = f"/proposals/{proposal_id}"
    return proposal


@_proposals.get("", response_model=list[Proposal], name="list_proposals", summary="List proposals")
async def list_proposals(
    request: Request,
    token: Viewer,
    workflow: str | None = Query(None, max_length=MAX_ID, description="only this workflow"),
    status: str | None = Query(None, pattern=f"^({'|'.join(STATUSES)})$"),
    kind: str | None = Query(None, pattern=f"^({'|'.join(KINDS)})$"),
    limit: int = Query(LIST_MAX, ge=1, le=LIST_MAX),
) -> list[Proposal]:
    """Proposals, newest first (without their histories: `GET /proposals/{id}` has it)."""
    return await ProposalStore(ctx_of(request).pool).list(
        namespace=token.namespace, workflow_id=workflow, status=status, kind=kind, limit=limit
    )


@_proposals.get(
    "/{proposal_id}", response_model=Proposal, name="get_proposal", summary="Show a proposal"
)
async def get_proposal(proposal_id: ProposalId, request: Request, token: Viewer) -> Proposal:
    """One proposal: its evidence, validation, what was applied, and every transition."""
    return await _visible(ctx_of(request), token, proposal_id)


@_proposals.post(
    "", response_model=Proposal, status_code=201, name="create_proposal", summary="Propose a change"
)
async def create_proposal(body: NewProposal, request: Request, token: Author) -> Proposal:
    """A person's proposal: the mutation must apply to the workflow's live version (422 with
    each problem otherwise); it is filed open and its lifecycle starts."""
    ctx = ctx_of(request)
    await _visible_workflow(ctx, token, body.workflow_id)
    client = await ctx.temporal()
    try:
        return await create(
            client, ctx.pool, ctx.settings, actor=actor(token), workflow_id=body.workflow_id,
            title=body.title, mutation=body.mutation, namespace=token.namespace, kind=body.kind,
            diagnosis=body.diagnosis,
            nodes_allowed=token.allows("admin") and token.namespace is None,
        )  # fmt: skip
    except (ConfigError, NotFoundError) as exc:  # the workflow is seen: a node op names no node
        raise ApiError(422, f"mutation: {exc}") from None


@_proposals.post(
    "/{proposal_id}/validate",
    response_model=Proposal,
    status_code=202,
    name="validate_proposal",
    summary="Validate a proposal",
)
async def validate_proposal(
    proposal_id: ProposalId, request: Request, response: Response, token: Author,
    body: ValidateBody | None = None,
) -> Proposal:  # fmt: skip
    """Try the change against a fresh baseline: shadow replays of recent live runs, or a
    canary. 409 when the proposal cannot be validated now."""
    body = body or ValidateBody()
    return await _ask(request, response, token, proposal_id, "validate", mode=body.mode,
                      runs=body.runs)  # fmt: skip


@_proposals.post(
    "/{proposal_id}/accept",
    response_model=Proposal,
    status_code=202,
    name="accept_proposal",
    summary="Accept a proposal",
)
async def accept_proposal(
    proposal_id: ProposalId, request: Request, response: Response, token: Reviewer,
    body: AcceptBody | None = None,
) -> Proposal:  # fmt: skip
    """Apply a validated proposal (the lifecycle applies it, then watches the next runs).
    409 unless validated; `force` (an admin's, with a note) accepts it anyway."""
    body = body or AcceptBody()
    await _visible(ctx_of(request), token, proposal_id)  # another namespace's: 404, not 403
    if body.force and not token.allows("admin"):
        raise ApiError(
            403, f"a forced accept needs the admin role; the token's role is {token.role}"
        )
    return await _ask(request, response, token, proposal_id, "accept", note=body.note,
                      force=body.force)  # fmt: skip


@_proposals.post(
    "/{proposal_id}/reject",
    response_model=Proposal,
    status_code=202,
    name="reject_proposal",
    summary="Reject a proposal",
)
async def reject_proposal(
    proposal_id: ProposalId, body: RejectBody, request: Request, response: Response,
    token: Reviewer,
) -> Proposal:  # fmt: skip
    """Turn a proposal down, saying why; 409 once it is accepted or applied."""
    return await _ask(request, response, token, proposal_id, "reject", note=body.note)


@_critic.post(
    "/run", response_model=CriticFindings, name="run_critic", summary="Run the Critic now"
)
async def critic_run(
    request: Request, token: Author, body: CriticScan | None = None
) -> CriticFindings:
    """Scan the recent traces now and file what the detectors find (a namespaced token's
    scan reads its namespace only). Open Critic proposals it no longer finds are
    superseded."""
    body = body or CriticScan()
    ctx = ctx_of(request)
    if body.workflow is not None:
        await _visible_workflow(ctx, token, body.workflow)
    since = timedelta(seconds=parse_duration(body.since)) if body.since else None
    found, errors = await run_critic(
        await ctx.temporal(), ctx.pool, ctx.settings, actor=actor(token),
        workflow_id=body.workflow, namespace=token.namespace, since=since,
    )  # fmt: skip
    return CriticFindings(proposals=found, errors=errors)


router.include_router(_proposals)
router.include_router(_critic)
