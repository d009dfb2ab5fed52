"""Apply an accepted proposal: its graph mutations become the workflow's next live version
(through the YAML round trip, so the author's comments survive; the version's note names
the proposal), or its node-level operations change the registry (a rollout, a deprecation),
or a revert makes the version before live again.

It happens in two steps, so a crash between them changes nothing twice: `intent` reads what
is live now and how to undo the change, and is stored on the proposal (`applied`) before
anything changes; `apply` then carries it out against that intent. Run again after a crash,
`apply` sees the change is there already (the live version's note names the proposal, or
the rollout is as asked) and only finishes what was left (the triggers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.aio.client import Client as Nats
from temporalio.client import Client

from evolution.proposals.model import NODE_OPS, WORKFLOW_OPS, Applied, Proposal
from infra import ConfigError, LifecycleError, Settings


def kind_of_change(proposal: Proposal) -> str:
    """graph, node or workflow (a revert's promote); ConfigError for none or a mix."""
    if not proposal.mutation:
        raise ConfigError(f"proposal {proposal.id} has nothing to apply (a finding)")
    kinds = {("node" if op.get("op") in NODE_OPS else "workflow" if op.get("op") in
              WORKFLOW_OPS else "graph") for op in proposal.mutation}  # fmt: skip
    if len(kinds) > 1:
        raise ConfigError(
            f"proposal {proposal.id} mixes graph mutations with node or workflow operations"
        )
    return kinds.pop()


async def intent(
    pool: asyncpg.Pool, proposal: Proposal, actor: str, *, forced: bool = False
) -> Applied:
    """What applying will change from (the live version, a node's rollout now) and how
    to undo it, read before anything changes. LifecycleError when the live version is not
    the one the change was validated on (unless an admin forced the accept): what would
    be applied was never tried."""
    from registry import NodeRegistry, WorkflowRegistry

    kind = kind_of_change(proposal)
    live = await WorkflowRegistry(pool, actor).live(proposal.workflow_id)
    tried = proposal.validation.base_version if proposal.validation else None
    if kind == "graph" and tried is not None and tried != live.version and not forced:
        raise LifecycleError(
            f"it was validated on {proposal.workflow_id}@{tried}, but @{live.version} is live"
            " now: validate it again"
        )
    undo: list[dict[str, Any]] = []
    if kind == "graph":
        undo = [{"op": "promote", "workflow": proposal.workflow_id, "version": live.version}]
    elif kind == "node":
        rollouts = (await NodeRegistry(pool, actor).catalog()).rollouts
        for op in proposal.mutation:
            now = rollouts.get(op["node"])
            if op["op"] != "rollout":
                continue  # a deprecation is undone by a person (promote it again)
            if now is not None:  # back to the rollout there was, whichever version
                undo.append({"op": "rollout", "node": op["node"], "version": now.version,
                             "percent": now.percent})  # fmt: skip
            else:  # there was none: stop this one
                undo.append({"op": "rollout", "node": op["node"], "version": op["version"],
                             "percent": 0})  # fmt: skip
    return Applied(previous_version=live.version, by=actor, undo=undo)


async def apply(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    actor: str,
) -> Applied:  # fmt: skip
    """Carry the proposal out against its recorded intent (`proposal.applied`). SpecError,
    RegistryError or LifecycleError when it no longer applies (the live version moved on
    since, a version is gone); nothing is changed then."""
    planned = proposal.applied
    if planned is None:
        raise ConfigError(f"proposal {proposal.id}: no intent recorded before applying")
    kind = kind_of_change(proposal)
    if kind == "node":
        return await _node_ops(pool, proposal, planned, actor)
    if kind == "workflow":
        return await _promote(client, nc, pool, settings, proposal, planned, actor)
    return await _revise(client, nc, pool, settings, proposal, planned, actor)


async def _revise(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    planned: Applied, actor: str,
) -> Applied:  # fmt: skip
    from orchestrator import cron_ids, load_version, revise
    from registry import WorkflowRegistry

    registry = WorkflowRegistry(pool, actor)
    live = await registry.live(proposal.workflow_id)
    before = await registry.get(proposal.workflow_id, planned.previous_version)
    if live.version != planned.previous_version:
        if not live.note.startswith(f"proposal {proposal.id}:"):
            raise LifecycleError(
                f"{proposal.workflow_id}@{live.version} went live since the apply began"
                f" (from @{planned.previous_version}): validate the proposal again"
            )
        version = live.version  # a crash after the revision: it is there already
        spec = (await load_version(pool, proposal.workflow_id, version)).spec
    else:
        note = f"proposal {proposal.id}: {proposal.title}"[:500]
        revision = await revise(
            pool, actor, proposal.workflow_id, planned.previous_version, proposal.mutation,
            note=note,
        )  # fmt: skip
        version, spec = revision.version, revision.spec
        if not revision.went_live:
            raise LifecycleError(f"proposal {proposal.id}: the mutations change nothing")
    await follow_live(client, nc, settings, spec, cron_ids(before.source))
    return planned.model_copy(update={"workflow_version": version, "at": datetime.now(UTC)})


async def _promote(
    client: Client, nc: Nats, pool: asyncpg.Pool, settings: Settings, proposal: Proposal,
    planned: Applied, actor: str,
) -> Applied:  # fmt: skip
    """A revert: make an earlier version live again (with its triggers), if what it
    reverts is still live (else a person decides: something went live since)."""
    from orchestrator import cron_ids, load_version
    from registry import WorkflowRegistry

    (op,) = proposal.mutation  # WORKFLOW_OPS come one at a time
    registry = WorkflowRegistry(pool, actor)
    live = await registry.live(op["workflow"])
    target = int(op["version"])
    if live.version not in (planned.previous_version, target):
        raise LifecycleError(
            f"{op['workflow']}@{live.version} went live since the revert was filed: not"
            f" reverting to @{target} over it"
        )
    spec = (await load_version(pool, op["workflow"], target)).spec
    promoted = await registry.promote(op["workflow"], target)
    before = await registry.get(op["workflow"], planned.previous_version)
    await follow_live(client, nc, settings, spec, cron_ids(before.source))
    return planned.model_copy(
        update={"workflow_version": promoted.version, "at": datetime.now(UTC)}
    )


async def _node_ops(
    pool: asyncpg.Pool, proposal: Proposal, planned: Applied, actor: str
) -> Applied:
    from registry import NodeRegistry

    registry = NodeRegistry(pool, actor)
    touched = []
    for op in proposal.mutation:
        name, version = op["node"], op["version"]
        touched.append(f"{name}@{version}")
        if op["op"] == "rollout":
            now = (await registry.catalog()).rollouts.get(name)
            percent = int(op["percent"])
            there = (now is not None and now.version == version and now.percent == percent) or (
                percent == 0 and (now is None or now.version != version))  # fmt: skip
            if not there:
                await registry.rollout(name, version, percent)
        else:
            info = (await registry.catalog()).info(name, version)
            if info is not None and info.status != "deprecated":
                await registry.deprecate(name, version, note=f"proposal {proposal.id}")
    return planned.model_copy(update={"node": ", ".join(touched), "at": datetime.now(UTC)})


async def follow_live(
    client: Client, nc: Nats, settings: Settings, spec: Any, before: set[str]
) -> list[str]:
    """The workflow's cron Schedules and event listeners in step with its new live
    version `spec` (`before`: the cron trigger ids of the version live until now)."""
    from orchestrator import announce_change, sync_schedules

    changes = await sync_schedules(client, spec, settings.temporal.task_queue, before)
    await announce_change(nc)
    return changes
