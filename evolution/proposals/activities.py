"""The lifecycle workflow's activities: every read and write it makes of the world. Each
is safe to run again after a crash halfway (Temporal retries it): a status already written
is not written twice, a run already launched is not launched again."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import asyncpg
from nats.aio.client import Client as Nats
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from evolution import apply as applying
from evolution import validation as validating
from evolution import watch as watching
from evolution.proposals import lifecycle as names
from evolution.proposals.lifecycle import (
    AUTO,
    Asked,
    Finish,
    Loaded,
    Request,
    Step,
    TransitionRequest,
)
from evolution.proposals.model import NODE_OPS, Proposal, Validation
from evolution.proposals.service import kind_of
from evolution.proposals.store import ProposalStore
from infra import (
    ConfigError,
    LifecycleError,
    NotFoundError,
    RegistryError,
    Settings,
    SpecError,
)

log = logging.getLogger("reflux.evolution")

AUTO_SOURCES = ("critic", "optimizer")
"""Whose proposals a workflow's `auto_apply` may apply without a person."""


class LifecycleActivities:
    def __init__(self, pool: asyncpg.Pool, client: Client, nc: Nats, settings: Settings) -> None:
        self.pool = pool
        self.client = client
        self.nc = nc
        self.settings = settings
        self.store = ProposalStore(pool)

    def all(self) -> list[Any]:
        return [
            self.load, self.transition, self.validate_start, self.validate_check,
            self.validate_finish, self.auto_apply, self.apply, self.watch_start,
            self.watch_check, self.revert,
        ]  # fmt: skip

    @activity.defn(name=names.LOAD)
    async def load(self, proposal_id: str) -> Loaded:
        proposal = await self._get(proposal_id)
        poll = max(self.settings.evolution.poll.total_seconds(), 0.5)
        return Loaded(status=proposal.status, poll=poll)

    @activity.defn(name=names.TRANSITION)
    async def transition(self, change: TransitionRequest) -> None:
        await self.store.transition(
            change.proposal_id, change.status, change.actor, change.note, expect=change.expect
        )

    @activity.defn(name=names.VALIDATE_START)
    async def validate_start(self, asked: Asked) -> None:
        """Plan the validation and move the proposal to validating, then launch its arms.
        A retry finds its own plan (same key) and launches only what is missing. A plan
        that cannot be made (no live run to replay) leaves the proposal as it was."""
        pid, request = asked.proposal_id, asked.request
        info = activity.info()
        key = validating.validation_key(pid, f"{info.workflow_run_id}/{info.activity_id}")
        proposal = await self._get(pid)
        current = proposal.validation
        if proposal.status != "validating" or current is None or current.key != key:
            try:
                current = await validating.plan(
                    self.pool, self.settings, proposal, request.mode, request.runs, key
                )
            except (ConfigError, LifecycleError, SpecError, NotFoundError) as exc:
                log.warning("proposal %s: validation not started: %s", pid, exc)
                raise ApplicationError(str(exc), non_retryable=True) from None
            proposal = await self.store.transition(
                pid, "validating", request.actor, f"{current.mode} validation, {current.target}"
                " runs per arm", changes={"validation": current},
            )  # fmt: skip
        try:
            started = await validating.launch(
                self.client, self.pool, self.settings, proposal, current, request.actor,
                beat=activity.heartbeat,
            )  # fmt: skip
        except (ConfigError, SpecError, RegistryError) as exc:
            started = current.model_copy(update={"reason": f"could not start: {exc}"})
            await self.store.update(pid, {"validation": started})
            return
        await self.store.update(pid, {"validation": started})

    @activity.defn(name=names.VALIDATE_CHECK)
    async def validate_check(self, proposal_id: str) -> Step:
        proposal = await self._get(proposal_id)
        current = _validation(proposal)
        if current.reason.startswith("could not start"):
            return Step(done=True)
        done, harmful, current = await validating.check(self.pool, self.settings, proposal, current)
        await self.store.update(proposal_id, {"validation": current})
        return Step(done=done, harmful=harmful, detail={"samples": current.samples})

    @activity.defn(name=names.VALIDATE_FINISH)
    async def validate_finish(self, finish: Finish) -> str:
        """End the validation and judge it; returns the status it leaves."""
        proposal = await self._get(finish.proposal_id)
        if proposal.status != "validating":  # judged before a crash: done already
            return proposal.status
        current = _validation(proposal)
        if current.reason.startswith("could not start"):
            current.result = "inconclusive"
            ended = await self.store.transition(
                proposal.id, "inconclusive", AUTO, current.reason,
                changes={"validation": current},
            )  # fmt: skip
            return ended.status
        judged = await validating.finish(
            self.pool, self.settings, proposal, current, AUTO, finish.judge
        )
        if not finish.judge:
            await self.store.update(proposal.id, {"validation": judged})
            return "validating"
        status = validating.STATUS_OF[judged.result or "inconclusive"]
        ended = await self.store.transition(
            proposal.id, status, AUTO, judged.reason, changes={"validation": judged}
        )
        return ended.status

    @activity.defn(name=names.AUTO_APPLY)
    async def auto_apply(self, proposal_id: str) -> bool:
        """Whether the workflow's live version opts in to applying this kind unattended."""
        from orchestrator import load_version

        proposal = await self._get(proposal_id)
        try:
            live = await load_version(self.pool, proposal.workflow_id)
        except (NotFoundError, SpecError):
            return False
        wanted = live.spec.evolution.auto_apply if live.spec.evolution else []
        # Only what the platform proposed applies unattended (a person's proposal waits for
        # a reviewer, whatever its kind), never a node's change (every namespace runs the
        # node), and only where the kind is what the mutation amounts to.
        return (
            proposal.source in AUTO_SOURCES
            and proposal.kind in wanted
            and not any(op.get("op") in NODE_OPS for op in proposal.mutation)
            and kind_of(proposal.mutation) == proposal.kind
        )

    @activity.defn(name=names.APPLY)
    async def apply(self, proposal_id: str) -> str:
        """Apply an accepted proposal; one that no longer applies is rejected, saying why."""
        proposal = await self._get(proposal_id)
        if proposal.status == "applied" and proposal.kind == "revert":
            await self._mark_reverted(proposal)  # a crash between the two writes
        if proposal.status != "accepted":
            return proposal.status
        actor = _accepted_by(proposal)
        forced = any(t.status == "accepted" and t.note.startswith("forced") for t in
                     proposal.history)  # fmt: skip
        try:
            if proposal.applied is None:  # what it changes from, kept before it changes
                planned = await applying.intent(self.pool, proposal, actor, forced=forced)
                await self.store.update(proposal_id, {"applied": planned})
                proposal = proposal.model_copy(update={"applied": planned})
            done = await applying.apply(
                self.client, self.nc, self.pool, self.settings, proposal, actor
            )
        except (ConfigError, SpecError, RegistryError, LifecycleError, NotFoundError) as exc:
            why = "; ".join(str(p) for p in exc.problems) if isinstance(exc, SpecError) else exc
            rejected = await self.store.transition(
                proposal_id, "rejected", AUTO, f"could not apply: {why}"
            )
            return rejected.status
        where = f"version {done.workflow_version}" if done.workflow_version else done.node
        applied = await self.store.transition(
            proposal_id, "applied", actor, f"applied: {where}", changes={"applied": done}
        )
        if proposal.kind == "revert":  # the proposal it undoes is reverted only now
            await self._mark_reverted(proposal)
        return applied.status

    async def _mark_reverted(self, revert: Proposal) -> None:
        reverted = str(revert.evidence.figures.get("reverts", ""))
        with contextlib.suppress(NotFoundError, LifecycleError):
            await self.store.transition(
                reverted, "reverted", AUTO, f"reverted by {revert.id}", expect=["applied"]
            )

    @activity.defn(name=names.WATCH_START)
    async def watch_start(self, proposal_id: str) -> Step:
        proposal = await self._get(proposal_id)
        watch = await watching.begin(self.pool, self.settings, proposal)
        if proposal.applied is not None and not proposal.applied.watch:
            await self._set_watch(proposal, watch)
        worse = watch.get("result") == "fail" and proposal.status == "applied"
        return Step(done=bool(watch.get("done")), harmful=worse)

    @activity.defn(name=names.WATCH_CHECK)
    async def watch_check(self, proposal_id: str) -> Step:
        proposal = await self._get(proposal_id)
        if proposal.applied is None or proposal.applied.watch.get("done"):
            return Step(done=True, harmful=proposal.applied is not None and
                        proposal.applied.watch.get("result") == "fail")  # fmt: skip
        done, harmful, watch = await watching.look(self.pool, self.settings, proposal)
        await self._set_watch(proposal, watch)
        return Step(done=done, harmful=harmful)

    @activity.defn(name=names.REVERT)
    async def revert(self, proposal_id: str) -> str:
        """File the revert proposal, once (its id is this one's plus `-revert`), whose own
        lifecycle applies it at once and then marks this one reverted; with nothing to
        undo, say so and leave it applied."""
        from evolution.proposals.service import start_lifecycle

        proposal = await self._get(proposal_id)
        if proposal.status != "applied":
            return proposal.status
        finding = watching.revert_finding(proposal)
        reason = proposal.applied.watch.get("reason", "") if proposal.applied else ""
        if finding is None:
            log.warning("proposal %s got worse after apply but has nothing to undo", proposal_id)
            return proposal.status
        finding.signature = f"revert-of-{proposal_id}"
        revert, _ = await self.store.file(
            finding, "watch", AUTO, proposal_id=f"{proposal_id}-revert"
        )
        assert revert is not None
        accept = Request(action="accept", actor=AUTO, note=f"the watch of {proposal_id}: "
                         f"{reason}", force=True, role="admin")  # fmt: skip
        await start_lifecycle(self.client, self.settings, revert.id, accept=accept)
        return proposal.status

    async def _set_watch(self, proposal: Proposal, watch: dict[str, Any]) -> None:
        applied = proposal.applied.model_copy(update={"watch": watch})  # type: ignore[union-attr]
        await self.store.update(proposal.id, {"applied": applied})

    async def _get(self, proposal_id: str) -> Proposal:
        try:
            return await self.store.get(proposal_id)
        except NotFoundError as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None


def _validation(proposal: Proposal) -> Validation:
    if proposal.validation is None:
        raise ApplicationError(f"proposal {proposal.id} has no validation", non_retryable=True)
    return proposal.validation


def _accepted_by(proposal: Proposal) -> str:
    accepted = [t for t in proposal.history if t.status == "accepted"]
    return accepted[-1].actor if accepted else AUTO
