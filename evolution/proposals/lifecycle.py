"""A proposal's life as a Temporal workflow (`reflux.proposal`, task queue
`reflux-evolution`, workflow id = the proposal id): the one writer of its status.

People and the Critic send signals (`validate`, `accept`, `reject`, `supersede`); the
workflow handles them one at a time, in order, and every status write is an activity on the
`proposals` table (`ProposalStore.transition`). While a validation collects samples, or the
watch after an apply waits for live runs, it sleeps on durable timers and looks again, so a
restart of the evolution worker, or of Temporal, loses nothing. Where it is in its life is
read from the table when it starts, so the same code resumes after `continue_as_new` (which
keeps a long watch's history short) and when the worker starts a workflow for a proposal
that lost its own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

LIFECYCLE = "reflux.proposal"
LOAD = "reflux.proposal.load"
TRANSITION = "reflux.proposal.transition"
VALIDATE_START = "reflux.proposal.validate.start"
VALIDATE_CHECK = "reflux.proposal.validate.check"
VALIDATE_FINISH = "reflux.proposal.validate.finish"
AUTO_APPLY = "reflux.proposal.auto_apply"
APPLY = "reflux.proposal.apply"
WATCH_START = "reflux.proposal.watch.start"
WATCH_CHECK = "reflux.proposal.watch.check"
REVERT = "reflux.proposal.revert"

AUTO = "reflux"
"""Who the workflow's own decisions are recorded as (auto_apply, the watch)."""

_QUICK = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30)),
}
_LONG = {  # a revision, a judgement: longer, and retried until the world is back
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
_LAUNCH = {  # launching a shadow validation's runs: a heartbeat per run
    **_LONG,
    "heartbeat_timeout": timedelta(seconds=60),
}


class Request(BaseModel):
    """One thing somebody asked of the proposal."""

    action: str
    """validate, accept, reject or supersede."""
    actor: str
    note: str = ""
    mode: str | None = None
    runs: int | None = None
    force: bool = False
    role: str = ""


class LifecycleStart(BaseModel):
    proposal_id: str
    requests: list[Request] = []
    """Requests not handled yet, carried over `continue_as_new`."""
    accept: Request | None = None
    """Accept as soon as the workflow starts (a revert the watch files)."""


class Loaded(BaseModel):
    status: str
    poll: float
    """Seconds between looks at a validation's or watch's runs (REFLUX_EVOLUTION_POLL)."""


class Asked(BaseModel):
    proposal_id: str
    request: Request


class Step(BaseModel):
    """What a check of a validation or watch found."""

    done: bool = False
    harmful: bool = False
    detail: dict[str, Any] = {}


class Finish(BaseModel):
    proposal_id: str
    judge: bool = True
    """False: stopped by a request; end the canary's rollout but judge nothing."""


class TransitionRequest(BaseModel):
    proposal_id: str
    status: str
    actor: str
    note: str = ""
    expect: list[str] | None = None


@workflow.defn(name=LIFECYCLE)
class ProposalWorkflow:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.status = "open"
        self.phase = "waiting"

    @workflow.signal
    def request(self, request: Request) -> None:
        self.requests.append(request)

    @workflow.query
    def state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "phase": self.phase,
            "pending": [r.action for r in self.requests],
        }

    @workflow.run
    async def run(self, start: LifecycleStart) -> str:
        pid = start.proposal_id
        self.requests = [*start.requests, *self.requests]
        loaded = await self._load(pid)
        if start.accept is not None and loaded.status in ("open", "validated"):
            await self._accept(pid, start.accept)
        while True:
            if self.status in ("reverted", "rejected", "superseded"):
                return self.status
            if self.status == "validating":
                await self._validation(pid, loaded.poll)
                if self.status == "validating":  # stopped by a reject or supersede
                    stop = next(r for r in self.requests if r.action in STOPS)
                    self.requests.remove(stop)
                    await self._handle(pid, stop)
                continue
            if self.status == "accepted":
                await self._apply(pid)
                continue
            if self.status == "applied":
                await self._watch(pid, loaded.poll)
                return self.status
            if workflow.info().is_continue_as_new_suggested() and not self.requests:
                workflow.continue_as_new(LifecycleStart(proposal_id=pid))
            self.phase = "waiting"
            await workflow.wait_condition(lambda: bool(self.requests))
            await self._handle(pid, self.requests.pop(0))

    async def _load(self, pid: str) -> Loaded:
        loaded: Loaded = await workflow.execute_activity(LOAD, pid, result_type=Loaded, **_QUICK)
        self.status = loaded.status
        return loaded

    async def _move(
        self, pid: str, status: str, actor: str, note: str = "", expect: list[str] | None = None
    ) -> None:
        await workflow.execute_activity(
            TRANSITION,
            TransitionRequest(
                proposal_id=pid, status=status, actor=actor, note=note, expect=expect
            ),
            **_QUICK,
        )
        self.status = status

    async def _handle(self, pid: str, request: Request) -> None:
        """Act on one request; one that does not fit the status now is dropped (the front
        door checked it against the table, so only a race gets here), and logged."""
        action, status = request.action, self.status
        if action in ("reject", "supersede") and status not in ("applied", "accepted"):
            done = "rejected" if action == "reject" else "superseded"
            await self._move(pid, done, request.actor, request.note)
        elif action == "validate" and status in ("open", "validated", "failed_validation",
                                                 "inconclusive"):  # fmt: skip
            note = f"{request.mode or 'auto'} validation asked"
            try:
                await workflow.execute_activity(
                    VALIDATE_START, Asked(proposal_id=pid, request=request), **_LAUNCH
                )
            except ActivityError as exc:  # it could not start: the proposal stays as it was
                workflow.logger.warning("proposal %s: %s failed: %s", pid, note, exc.cause)
            await self._load(pid)
        elif action == "accept" and (status == "validated" or _forced(request, status)):
            await self._accept(pid, request)
        else:
            workflow.logger.warning(
                "proposal %s: %s by %s dropped: the proposal is %s", pid, action,
                request.actor, status,
            )  # fmt: skip

    async def _accept(self, pid: str, request: Request) -> None:
        note = request.note or "accepted"
        if request.force and self.status != "validated":
            note = f"forced by {request.role or 'admin'} while {self.status}: {request.note}"
        await self._move(pid, "accepted", request.actor, note)

    async def _validation(self, pid: str, poll: float) -> None:
        """Wait for the arms' samples, looking every `poll` seconds, then judge. A reject
        or supersede that arrives meanwhile stops it unjudged (a canary's rollout is ended
        either way) and leaves the status to that request."""
        self.phase = "validating"
        stopped = False
        while True:
            if await _wait(lambda: any(r.action in STOPS for r in self.requests), poll):
                stopped = True
                break
            step: Step = await workflow.execute_activity(
                VALIDATE_CHECK, pid, result_type=Step, **_QUICK
            )
            if step.done or step.harmful:
                break
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(LifecycleStart(proposal_id=pid, requests=self.requests))
        status: str = await workflow.execute_activity(
            VALIDATE_FINISH, Finish(proposal_id=pid, judge=not stopped), result_type=str, **_LONG
        )
        self.status = status
        if status == "validated":
            auto: bool = await workflow.execute_activity(
                AUTO_APPLY, pid, result_type=bool, **_QUICK
            )
            if auto:
                await self._move(pid, "accepted", AUTO, "auto_apply: the workflow opts in")

    async def _apply(self, pid: str) -> None:
        self.phase = "applying"
        status: str = await workflow.execute_activity(APPLY, pid, result_type=str, **_LONG)
        self.status = status

    async def _watch(self, pid: str, poll: float) -> None:
        """Judge the live runs after the apply against those before it; revert on harm."""
        self.phase = "watching"
        started: Step = await workflow.execute_activity(
            WATCH_START, pid, result_type=Step, **_QUICK
        )
        if started.harmful:  # judged worse before a restart: revert now
            self.status = await workflow.execute_activity(REVERT, pid, result_type=str, **_LONG)
            return
        if started.done:  # nothing to watch (a revert), or watched to the end before
            return
        while True:
            await workflow.sleep(poll)
            step: Step = await workflow.execute_activity(
                WATCH_CHECK, pid, result_type=Step, **_QUICK
            )
            if step.harmful:
                self.status = await workflow.execute_activity(REVERT, pid, result_type=str, **_LONG)
                return
            if step.done:
                return
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(LifecycleStart(proposal_id=pid, requests=self.requests))


STOPS = ("reject", "supersede")


def _forced(request: Request, status: str) -> bool:
    return (
        request.force
        and request.role == "admin"
        and bool(request.note)
        and status in ("open", "failed_validation", "inconclusive")
    )


async def _wait(condition: Any, seconds: float) -> bool:
    """True when `condition` held within `seconds` (a durable timer either way)."""
    try:
        await workflow.wait_condition(condition, timeout=timedelta(seconds=seconds))
    except TimeoutError:
        return False
    return True
