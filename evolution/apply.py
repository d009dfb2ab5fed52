"""Apply an accepted proposal: its graph mutations become the workflow's next live version
(through the YAML round trip, so the author's comments survive; the version's note names
the proposal), or its node-level operations change the registry (a rollout, a deprecation),
or a revert makes the version before live again. What it did, and how to undo it, is
returned for the proposal's `applied`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.aio.client import Client as Nats
from temporalio.client import Client

from evolution.proposals.model import NODE_OPS, WORKFLOW_OPS, Applied, Proposal
from infra import ConfigError, Settings


async def apply(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    actor: str,
) -> Applied:  # fmt: skip
    """Carry the proposal out. SpecError or RegistryError when it no longer applies (the
    workflow changed since, a version is gone); nothing is changed then."""
    ops = proposal.mutation
    if not ops:
        raise ConfigError(f"proposal {proposal.id} has nothing to apply (a finding)")
    kinds = {("node" if op.get("op") in NODE_OPS else "workflow" if op.get("op") in
              WORKFLOW_OPS else "graph") for op in ops}  # fmt: skip
    if len(kinds) > 1:
        raise ConfigError(
            f"proposal {proposal.id} mixes graph mutations with node or workflow operations"
        )
    kind = kinds.pop()
    if kind == "node":
        return await _node_ops(pool, proposal, actor)
    if kind == "workflow":
        return await _promote(client, nc, pool, settings, proposal, actor)
    return await _revise(client, nc, pool, settings, proposal, actor)


async def _revise(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    actor: str,
) -> Applied:  # fmt: skip
    from orchestrator import cron_ids, revise
    from registry import WorkflowRegistry

    live = await WorkflowRegistry(pool, actor).live(proposal.workflow_id)
    note = f"proposal {proposal.id}: {proposal.title}"[:500]
    revision = await revise(pool, actor, proposal.workflow_id, None, proposal.mutation, note=note)
    if revision.went_live:
        await follow_live(client, nc, settings, revision.spec, cron_ids(live.source))
    return Applied(
        workflow_version=revision.version,
        previous_version=live.version,
        at=datetime.now(UTC),
        by=actor,
        undo=[{"op": "promote", "workflow": proposal.workflow_id, "version": live.version}],
    )


async def _promote(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    actor: str,
) -> Applied:  # fmt: skip
    """A revert: make an earlier version live again (with its triggers)."""
    from orchestrator import cron_ids, load_version
    from registry import WorkflowRegistry

    (op,) = proposal.mutation  # WORKFLOW_OPS come one at a time
    registry = WorkflowRegistry(pool, actor)
    before = await registry.live(op["workflow"])
    target = await load_version(pool, op["workflow"], int(op["version"]))
    promoted = await registry.promote(op["workflow"], int(op["version"]))
    if promoted.changed:
        await follow_live(client, nc, settings, target.spec, cron_ids(before.source))
    return Applied(
        workflow_version=promoted.version,
        previous_version=promoted.previous,
        at=datetime.now(UTC),
        by=actor,
    )


async def _node_ops(pool: asyncpg.Pool, proposal: Proposal, actor: str) -> Applied:
    from registry import NodeRegistry

    registry = NodeRegistry(pool, actor)
    undo: list[dict[str, Any]] = []
    touched = []
    for op in proposal.mutation:
        name, version = op["node"], op["version"]
        touched.append(f"{name}@{version}")
        if op["op"] == "rollout":
            before = (await registry.catalog()).rollouts.get(name)
            was = before.percent if before is not None and before.version == version else 0
            await registry.rollout(name, version, int(op["percent"]))
            undo.append({"op": "rollout", "node": name, "version": version, "percent": was})
        else:
            await registry.deprecate(name, version, note=f"proposal {proposal.id}")
    return Applied(node=", ".join(touched), at=datetime.now(UTC), by=actor, undo=undo)


async def follow_live(
    client: Client, nc: Nats, settings: Settings, spec: Any, before: set[str]
) -> list[str]:
    """The workflow's cron Schedules and event listeners in step with its new live
    version `spec` (`before`: the cron trigger ids of the version live until now)."""
    from orchestrator import announce_change, sync_schedules

    changes = await sync_schedules(client, spec, settings.temporal.task_queue, before)
    await announce_change(nc)
    return changes
