"""What the front doors (CLI, API) do with proposals: create one, ask its lifecycle to
validate, accept or reject it, and run the Critic.

A request is checked against the proposal's status first, so a refusal is one line at once
(accepting what did not pass validation, say); then it is a signal to the lifecycle
workflow, which Temporal keeps even while the evolution worker is down. The workflow stays
the one writer of the status: the caller may wait for the change (`wait_for`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from evolution.proposals.lifecycle import LifecycleStart, ProposalWorkflow, Request
from evolution.proposals.model import (
    FINAL,
    NODE_OPS,
    WORKFLOW_OPS,
    Finding,
    Proposal,
)
from evolution.proposals.store import LIST_LIMIT, ProposalStore
from infra import ConfigError, LifecycleError, NotFoundError, ServiceError, Settings

REVIEWABLE = ("open", "validated", "failed_validation", "inconclusive")
"""Where a proposal may be validated (again) or accepted."""
SUPERSEDABLE = REVIEWABLE
"""Where the Critic's later scan may supersede a proposal (not while it is being
validated)."""
MAX_TITLE = 300
KIND_OF_POLICY = {"retry": "retry", "timeout": "timeout", "cache": "cache"}


async def start_lifecycle(
    client: Client, settings: Settings, proposal_id: str, *, accept: Request | None = None
) -> None:
    """Start the proposal's lifecycle workflow unless it runs, or ran to its end, already
    (one that failed starts again, where the table says the proposal is)."""
    try:
        await client.start_workflow(
            ProposalWorkflow.run,
            LifecycleStart(proposal_id=proposal_id, accept=accept),
            id=proposal_id,
            task_queue=settings.evolution.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:
        pass


async def create(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    actor: str,
    workflow_id: str,
    title: str,
    mutation: Any,
    namespace: str | None = None,
    kind: str | None = None,
    diagnosis: str = "",
    step_id: str | None = None,
    nodes_allowed: bool = False,
) -> Proposal:
    """A person's proposal: checked as the Critic's are (the mutation must apply to the
    live version), filed open, its lifecycle started. `namespace`: the caller's scope (a
    workflow outside it is not found). `kind` must be what the mutation amounts to (a
    workflow's `auto_apply` trusts it). `nodes_allowed`: the caller may change a node's
    rollout or status, which every namespace's workflows share (an admin of all)."""
    from orchestrator import apply_mutations, dump_mutations, load_version, parse_mutations

    title = " ".join(title.split())
    if not title:
        raise ConfigError("a proposal needs a --title")
    if len(title) > MAX_TITLE:
        raise ConfigError(f"the title is longer than {MAX_TITLE} characters")
    live = await load_version(pool, workflow_id)
    if namespace is not None and live.spec.namespace != namespace:
        raise NotFoundError(f"unknown workflow '{workflow_id}'")
    ops = mutation if isinstance(mutation, list) else [mutation]
    if not ops or not all(isinstance(op, dict) for op in ops):
        raise ConfigError("--mutation must be a JSON object or a list of them, each with an 'op'")
    node_ops = [op for op in ops if op.get("op") in NODE_OPS]
    if node_ops and len(ops) > 1:
        raise ConfigError("one node operation (rollout, deprecate) a proposal, and nothing else")
    if any(op.get("op") in WORKFLOW_OPS for op in ops):
        raise ConfigError("'promote' is a revert's operation: use `reflux workflows promote`")
    if node_ops:
        if not nodes_allowed:
            raise LifecycleError(
                "node operations change what every namespace runs: only an admin of all"
                " namespaces may propose them"
            )
        await _check_node_ops(pool, node_ops)
    else:
        parsed = parse_mutations(ops)
        await asyncio.to_thread(apply_mutations, live.spec, parsed, live.catalog, live.stored.ref)
        ops = dump_mutations(parsed)
    steps = {op.get("step") for op in ops if isinstance(op.get("step"), str)}
    amounts = kind_of(ops)
    if kind is not None and kind != amounts:
        raise ConfigError(f"kind '{kind}' does not fit the mutation: it is a {amounts} change")
    finding = Finding(
        kind=amounts,  # type: ignore[arg-type]
        workflow_id=workflow_id,
        workflow_version=live.stored.version,
        namespace=live.spec.namespace,
        step_id=step_id or (steps.pop() if len(steps) == 1 else None),
        title=title,
        diagnosis=diagnosis,
        mutation=ops,
    )
    proposal, _ = await ProposalStore(pool).file(finding, "person", actor)
    assert proposal is not None  # no signature, so never held back
    await start_lifecycle(client, settings, proposal.id)
    return proposal


def kind_of(ops: Sequence[dict[str, Any]]) -> str:
    """The kind a person's mutations amount to: `retry` for retry settings alone, and so
    on; anything broader is `params`."""
    names = {op.get("op") for op in ops}
    if names <= set(NODE_OPS):
        return "node_version"
    if names == {"set_policy"}:
        touched = {key for op in ops for key in KIND_OF_POLICY if op.get(key) is not None}
        loosens = any((op.get("cache") or {}).get("allow_secrets") for op in ops)
        if len(touched) == 1 and not loosens:
            return KIND_OF_POLICY[touched.pop()]
    return "params"


async def _check_node_ops(pool: asyncpg.Pool, ops: list[dict[str, Any]]) -> None:
    from registry import NodeRegistry

    catalog = await NodeRegistry(pool, "").catalog()
    for op in ops:
        name, version = op.get("node"), op.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise ConfigError(f"{op.get('op')}: needs 'node' and 'version' strings")
        if catalog.info(name, version) is None:
            raise NotFoundError(f"{op['op']}: no node version {name}@{version}")
        if op["op"] == "rollout":
            percent = op.get("percent")
            if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                raise ConfigError("rollout: 'percent' must be a whole number from 0 to 100")


async def ask(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    proposal_id: str,
    request: Request,
    *,
    namespace: str | None = None,
) -> Proposal:
    """Check `request` against the proposal's status (LifecycleError, one line, when it
    cannot be done) and send it to the lifecycle. Returns the proposal as it was."""
    proposal = await ProposalStore(pool).get(proposal_id, namespace)
    refuse(proposal, request)
    if request.action == "validate":  # what cannot be tried is said now, not lost later
        from evolution.validation import plan

        most = settings.evolution.max_runs
        if request.runs is not None and request.runs > most:
            raise ConfigError(f"runs must be at most {most} a side (REFLUX_EVOLUTION_MAX_RUNS)")

        await plan(pool, settings, proposal, request.mode, request.runs, "check")
    if request.action == "accept":
        if namespace is not None and any(op.get("op") in NODE_OPS for op in proposal.mutation):
            raise LifecycleError(
                f"proposal {proposal_id} changes a node every namespace runs: only a reviewer"
                " of all namespaces may accept it"
            )
        if proposal.validation is not None and not request.force:
            await _live_unmoved(pool, proposal)
    try:
        # signal-with-start: a lifecycle that is gone (never started, or failed) starts
        # again with the request; a running one just takes it
        await client.start_workflow(
            ProposalWorkflow.run,
            LifecycleStart(proposal_id=proposal_id),
            id=proposal_id,
            task_queue=settings.evolution.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            start_signal="request",
            start_signal_args=[request],
        )
    except WorkflowAlreadyStartedError:
        raise LifecycleError(f"proposal {proposal_id}: its lifecycle has ended") from None
    except RPCError as exc:
        raise ServiceError(f"cannot reach Temporal to ask proposal {proposal_id}: {exc}") from None
    return proposal


async def _live_unmoved(pool: asyncpg.Pool, proposal: Proposal) -> None:
    """LifecycleError when the live version moved on since the change was validated: what
    would be applied was never tried."""
    from registry import WorkflowRegistry

    assert proposal.validation is not None
    base = proposal.validation.base_version
    if proposal.validation.node_arms or base is None:
        return
    live = await WorkflowRegistry(pool, "").live(proposal.workflow_id)
    if live.version != base:
        raise LifecycleError(
            f"proposal {proposal.id} was validated on {proposal.workflow_id}@{base}, but"
            f" @{live.version} is live now: validate it again"
        )


def refuse(proposal: Proposal, request: Request) -> None:
    """LifecycleError when `request` does not fit the proposal now."""
    pid, status, action = proposal.id, proposal.status, request.action
    if status in FINAL:
        raise LifecycleError(f"proposal {pid} is {status}: its life has ended")
    if action == "validate":
        if not proposal.mutation:
            raise LifecycleError(f"proposal {pid} is a {proposal.kind}: nothing to validate")
        if status not in REVIEWABLE:
            raise LifecycleError(f"proposal {pid} is {status}: it cannot be validated now")
        if request.mode not in (None, "shadow", "canary"):
            raise ConfigError(f"mode must be shadow or canary, not {request.mode!r}")
        if request.runs is not None and request.runs < 1:
            raise ConfigError("runs must be at least 1")
    elif action == "accept":
        if not proposal.mutation:
            raise LifecycleError(f"proposal {pid} is a {proposal.kind}: nothing to apply")
        if status == "validated":
            return
        if status not in REVIEWABLE:
            raise LifecycleError(f"proposal {pid} is {status}: it cannot be accepted now")
        if not request.force:
            raise LifecycleError(
                f"proposal {pid} is {status}, not validated: validate it first (or an admin"
                " forces it, with a note saying why)"
            )
        if request.role != "admin":
            raise LifecycleError(f"proposal {pid}: only an admin may force an accept")
        if not request.note.strip():
            raise LifecycleError(f"proposal {pid}: a forced accept needs a note saying why")
    elif action in ("reject", "supersede"):
        if status in ("accepted", "applied"):
            raise LifecycleError(f"proposal {pid} is {status}: too late to {action} it")
        if action == "reject" and not request.note.strip():
            raise LifecycleError(f"proposal {pid}: a reject needs a note saying why")
    else:
        raise ConfigError(f"unknown request '{action}'")


async def wait_for(
    pool: asyncpg.Pool,
    proposal_id: str,
    done: Sequence[str],
    timeout: float,
    *,
    every: float = 0.5,
) -> Proposal:
    """The proposal once its status is one of `done` (or when `timeout` seconds passed,
    as it is then)."""
    store = ProposalStore(pool)
    deadline = time.monotonic() + timeout
    while True:
        proposal = await store.get(proposal_id)
        if proposal.status in done or time.monotonic() >= deadline:
            return proposal
        await asyncio.sleep(every)


async def run_critic(
    client: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    actor: str,
    workflow_id: str | None = None,
    namespace: str | None = None,
    since: timedelta | None = None,
) -> tuple[list[Proposal], list[str]]:
    """Scan the traces and file what the detectors found: new proposals (each with its
    lifecycle) and refreshed open ones; open Critic proposals whose problem the scan no
    longer finds (on steps it saw enough of) are superseded. Returns the proposals new or
    updated, and the errors of detectors that failed (the others still ran)."""
    from evolution.critic import build_window, scan
    from reflection import query

    async def ask_traces(sql: str, params: Any) -> Any:
        return await query(settings, sql, params)

    window = await build_window(
        pool, ask_traces, since=since or settings.critic.window, workflow=workflow_id,
        namespace=namespace, settings=settings.critic,
    )  # fmt: skip
    found = await scan(window, await detectors(pool))
    store = ProposalStore(pool)
    filed = []
    for finding in found.findings:
        proposal, new = await store.file(
            finding, "critic", actor, cooldown=settings.critic.cooldown
        )
        if proposal is None:  # rejected a moment ago: not asked again yet
            continue
        if new:
            await start_lifecycle(client, settings, proposal.id)
        filed.append(proposal)
    if not found.errors:  # with a detector down, "not found" proves nothing
        await _supersede_stale(client, pool, settings, window, found, actor)
    return filed, list(found.errors)


async def detectors(pool: asyncpg.Pool) -> list[Any]:
    """The Critic's detectors, the node_version one with the registry's rollouts."""
    from evolution.critic import DETECTORS, NodeVersionDetector
    from registry import NodeRegistry

    catalog = await NodeRegistry(pool, "").catalog()
    return [
        NodeVersionDetector(catalog) if kind == "node_version" else detector
        for kind, detector in DETECTORS.items()
    ]


async def _supersede_stale(
    client: Client, pool: asyncpg.Pool, settings: Settings, window: Any, found: Any, actor: str
) -> None:
    """Supersede the Critic's proposals, not being validated, whose problem the scan no
    longer finds on steps it saw enough of."""
    store = ProposalStore(pool)
    signatures = {f.signature for f in found.findings}
    note = "the Critic's last scan no longer finds this problem"
    for workflow in window.workflows:
        for stale in await store.list(workflow_id=workflow, limit=LIST_LIMIT):
            if (
                stale.source == "critic"
                and stale.status in SUPERSEDABLE
                and stale.signature not in signatures
                and (stale.workflow_id, stale.step_id) in found.covered
            ):
                request = Request(action="supersede", actor=actor, note=note)
                try:
                    await ask(client, pool, settings, stale.id, request)
                except (LifecycleError, NotFoundError):
                    pass
