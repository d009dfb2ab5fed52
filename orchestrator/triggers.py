"""Cron triggers on Temporal Schedules.

Each cron trigger of a stored workflow's live version is one Schedule,
`reflux-cron.<workflow>.<trigger>`, created, updated and deleted as the live version changes
(`sync_schedules`, called after a push that made its version live and after a promotion,
with the live version's spec). A candidate's triggers are in force only once it is promoted:
until then its Schedules do not exist. A Schedule starts `TriggerWorkflow`, which prepares a
run of the workflow's live version (an activity: pins resolved at that moment, the run
recorded in the ledger, started by `cron:<trigger>`) and runs it as its child, so the
overlap policy sees a run as going until it ends.

Why the run id comes from the launcher's workflow id: Temporal makes that id unique per
scheduled action, and the prepare activity may run more than once for one action (a retry
after a lost completion). Deriving the id makes a repeat find the run it recorded and
return the same request (pinned as recorded) instead of leaving an orphan `running` row.
A run whose workflow then fails to start is recorded as failed, with the reason.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    import asyncpg
    from temporalio.client import (
        Client,
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleAlreadyRunningError,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleUpdate,
        ScheduleUpdateInput,
    )

    from infra import InputShapeError, NotFoundError, Settings
    from orchestrator.plan import RunInfo, RunLimits, RunRequest, build_plan, new_secret_nonce
    from orchestrator.spec import CronTrigger, Spec
    from orchestrator.workflow import DagWorkflow
    from registry import runs as ledger

__all__ = [
    "NOT_STARTED_ACTIVITY",
    "PREPARE_ACTIVITY",
    "TriggerActivities",
    "TriggerWorkflow",
    "cron_ids",
    "launch_run_id",
    "schedule_id",
    "sync_schedules",
]

PREPARE_ACTIVITY = "reflux.trigger.prepare"
NOT_STARTED_ACTIVITY = "reflux.trigger.not-started"
PREFIX = "reflux-cron."

_OVERLAP = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


class Launch(BaseModel):
    workflow_id: str
    trigger_id: str


class NotStarted(BaseModel):
    run_id: str
    reason: str


def schedule_id(workflow_id: str, trigger_id: str) -> str:
    return f"{PREFIX}{workflow_id}.{trigger_id}"


def launch_run_id(workflow_id: str, launcher_id: str) -> str:
    """The run id of the one run a launch (the launcher workflow `launcher_id`) makes."""
    digest = hashlib.sha256(launcher_id.encode()).hexdigest()[:12]
    return f"{workflow_id}-{digest}"


@workflow.defn(name="reflux.trigger")
class TriggerWorkflow:
    @workflow.run
    async def run(self, launch: Launch) -> str:
        request: RunRequest = await workflow.execute_activity(
            PREPARE_ACTIVITY,
            launch,
            result_type=RunRequest,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        try:
            child = await workflow.start_child_workflow(
                DagWorkflow.run,
                request,
                id=request.run.id,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except BaseException as exc:  # cancelled meanwhile, or the id is taken
            reason = f"the workflow did not start: {exc}".splitlines()[0]
            await workflow.execute_activity(
                NOT_STARTED_ACTIVITY,
                NotStarted(run_id=request.run.id, reason=reason),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
                cancellation_type=workflow.ActivityCancellationType.ABANDON,
            )
            raise
        try:
            await child
        except Exception as exc:  # the run's failure is the run's: the schedule goes on
            workflow.logger.info("triggered run %s failed: %s", request.run.id, exc)
        return request.run.id


class TriggerActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    @activity.defn(name=PREPARE_ACTIVITY)
    async def prepare(self, launch: Launch) -> RunRequest:
        from infra import SpecError
        from orchestrator.runs import load_version, prepare_run
        from registry import WorkflowRegistry

        ref = f"{launch.workflow_id} (live)"
        try:
            live = await load_version(self.pool, launch.workflow_id)
        except SpecError as exc:
            why = exc.problems[0]
            raise ApplicationError(f"{ref} cannot be started: {why}", non_retryable=True) from None
        ref = live.stored.ref
        trigger = live.spec.trigger(launch.trigger_id)
        if not isinstance(trigger, CronTrigger):
            why = f"it has no cron trigger '{launch.trigger_id}'"
            raise ApplicationError(f"{ref} cannot be started: {why}", non_retryable=True)
        run_id = launch_run_id(live.spec.id, activity.info().workflow_id)
        recorded = await self._recorded(run_id)
        # The live version's trigger fires; the run is of the version a workflow rollout
        # picks for this run id (labelled), or of what a repeat of this launch recorded.
        if recorded is not None:
            version, labels = recorded.workflow_version, recorded.labels
        else:
            version, labels = await WorkflowRegistry(self.pool, "").choose(live.spec.id, run_id)
        try:
            loaded = (
                live
                if version == live.stored.version
                else await load_version(self.pool, live.spec.id, version)
            )
            spec = loaded.spec
            inputs = spec.bind_inputs(trigger.inputs)
        except SpecError as exc:
            why = exc.problems[0]
            raise ApplicationError(f"{ref} cannot be started: {why}", non_retryable=True) from None
        if recorded is not None:  # a repeat of this launch: the run it recorded, as pinned
            return RunRequest(
                run=RunInfo(id=run_id, workflow=spec.id, version=version, labels=labels),
                plan=build_plan(
                    spec,
                    {step: pin["version"] for step, pin in recorded.pins.items()},
                    version,
                    loaded.catalog,
                    self.settings.temporal.local_step_timeout,
                ),
                inputs=inputs,
                local_end=True,
                limits=RunLimits.of(self.settings.limits),
                secret_nonce=new_secret_nonce(),
            )
        try:
            return await prepare_run(
                self.pool, self.settings, spec, loaded.catalog, inputs,
                loaded.stored.version, f"cron:{launch.trigger_id}", run_id, labels=labels,
            )  # fmt: skip
        except InputShapeError as exc:  # the trigger's own inputs: the same on every retry
            raise ApplicationError(f"{ref} cannot be started: {exc}", non_retryable=True) from None

    async def _recorded(self, run_id: str) -> ledger.RunRecord | None:
        try:
            return await ledger.get_run(self.pool, run_id)
        except NotFoundError:
            return None

    @activity.defn(name=NOT_STARTED_ACTIVITY)
    async def not_started(self, failed: NotStarted) -> None:
        """A prepared run whose workflow never started: failed, with why, in the ledger."""
        error = {"class": "RunError", "message": failed.reason}
        await ledger.record_end(self.pool, failed.run_id, "failed", error)

    def all(self) -> list[Any]:
        """Every activity of the launcher, for a worker to register."""
        return [self.prepare, self.not_started]


def _schedule(spec: Spec, trigger: CronTrigger, task_queue: str) -> Schedule:
    timing = (
        ScheduleSpec(cron_expressions=[trigger.schedule])
        if trigger.schedule
        else ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=trigger.every or 60))]
        )
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TriggerWorkflow.run,
            Launch(workflow_id=spec.id, trigger_id=trigger.id),
            id=schedule_id(spec.id, trigger.id),
            task_queue=task_queue,
        ),
        spec=timing,
        policy=SchedulePolicy(overlap=_OVERLAP[trigger.overlap]),
    )


def cron_ids(source: str) -> set[str]:
    """The cron trigger ids of a stored workflow's source (whose Schedules may exist)."""
    import yaml

    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError:
        return set()
    triggers = data.get("triggers") if isinstance(data, dict) else None
    return {
        str(t.get("id"))
        for t in triggers or []
        if isinstance(t, dict) and t.get("type") == "cron" and t.get("id")
    }


async def sync_schedules(
    client: Client,
    spec: Spec,
    task_queue: str,
    before: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Make the workflow's Schedules match the cron triggers of `spec`, which must be its
    live version's (a candidate's triggers wait for its promotion): create, update, delete
    (those of the trigger ids in `before`, the previously live version's, and any Temporal
    lists). Returns one line per change."""
    from temporalio.service import RPCError, RPCStatusCode

    wanted = {
        schedule_id(spec.id, t.id): _schedule(spec, t, task_queue)
        for t in spec.triggers
        if isinstance(t, CronTrigger)
    }
    mine = f"{PREFIX}{spec.id}."
    existing = {s.id async for s in await client.list_schedules() if s.id.startswith(mine)}
    existing |= {schedule_id(spec.id, t) for t in before}
    changes = []
    for sid, schedule in wanted.items():
        try:
            await client.create_schedule(sid, schedule)
            changes.append(f"schedule {sid}: created")
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(sid).update(replace)
            changes.append(f"schedule {sid}: updated")
    for sid in sorted(existing - set(wanted)):
        try:
            await client.get_schedule_handle(sid).delete()
            changes.append(f"schedule {sid}: deleted")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    return changes
