"""The evolution worker (`reflux evolution worker`, started by `reflux up`): runs the
proposals' lifecycle workflows and the Critic's scans on the `reflux-evolution` task
queue, until SIGTERM.

At start it makes sure of two things, so nothing waits on a lost piece: every proposal
whose life has not ended has its lifecycle workflow (a crash between filing and starting
one leaves a proposal without), and the Critic's Temporal Schedule matches
`REFLUX_CRITIC_EVERY` (created, updated, or deleted at 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import timedelta

import nats
from temporalio import activity, workflow
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
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from evolution.proposals.activities import LifecycleActivities
from evolution.proposals.lifecycle import ProposalWorkflow
from evolution.proposals.service import run_critic, start_lifecycle
from evolution.proposals.store import ProposalStore
from infra import Settings, addresses, create_pool, database_url

log = logging.getLogger("reflux.evolution")

CRITIC_SCHEDULE = "reflux-critic"
CRITIC_WORKFLOW = "reflux.critic"
CRITIC_ACTIVITY = "reflux.critic.scan"
CRITIC_ACTOR = "critic"


@workflow.defn(name=CRITIC_WORKFLOW)
class CriticWorkflow:
    """One scheduled scan of every workflow's recent traces."""

    @workflow.run
    async def run(self) -> int:
        filed: int = await workflow.execute_activity(
            CRITIC_ACTIVITY,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return filed


class CriticActivities:
    def __init__(self, pool: object, client: Client, settings: Settings) -> None:
        self.pool = pool
        self.client = client
        self.settings = settings

    @activity.defn(name=CRITIC_ACTIVITY)
    async def scan(self) -> int:
        filed, errors = await run_critic(
            self.client,
            self.pool,
            self.settings,
            actor=CRITIC_ACTOR,  # type: ignore[arg-type]
        )
        for error in errors:
            log.warning("critic: %s", error)
        return len(filed)


async def sync_critic_schedule(client: Client, settings: Settings) -> str:
    """The Critic's Schedule as the settings say; returns what was done, in words."""
    every = settings.critic.every
    handle = client.get_schedule_handle(CRITIC_SCHEDULE)
    if every.total_seconds() <= 0:
        try:
            await handle.delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return "critic schedule: off"
        return "critic schedule: deleted (REFLUX_CRITIC_EVERY=0)"
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            CRITIC_WORKFLOW, id=f"{CRITIC_SCHEDULE}-scan", task_queue=settings.evolution.task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(CRITIC_SCHEDULE, schedule)
        return f"critic schedule: every {every}"
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(replace)
        return f"critic schedule: every {every} (updated)"


async def resume_lifecycles(client: Client, store: ProposalStore, settings: Settings) -> int:
    """Start the lifecycle of every unfinished proposal that has none running."""
    started = 0
    for proposal_id, _ in await store.unfinished():
        try:
            await start_lifecycle(client, settings, proposal_id)
            started += 1
        except RPCError as exc:  # one bad proposal does not keep the worker down
            log.warning("proposal %s: lifecycle not resumed: %s", proposal_id, exc)
    return started


async def run_evolution_worker(
    settings: Settings, on_ready: Callable[[], None] | None = None
) -> None:
    from orchestrator import connect_temporal

    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), min_size=1, max_size=4)
    nc = await nats.connect(
        addresses(settings).nats,
        name="reflux-evolution",
        error_cb=_log_nats_error,
        max_reconnect_attempts=-1,
    )
    lifecycle = LifecycleActivities(pool, client, nc, settings)
    critic = CriticActivities(pool, client, settings)
    worker = Worker(
        client,
        task_queue=settings.evolution.task_queue,
        workflows=[ProposalWorkflow, CriticWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
        activities=[*lifecycle.all(), critic.scan],
        graceful_shutdown_timeout=settings.temporal.graceful_shutdown,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    log.info(await sync_critic_schedule(client, settings))
    await resume_lifecycles(client, ProposalStore(pool), settings)
    if on_ready is not None:
        on_ready()
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        await worker.shutdown()
    await running
    await nc.drain()
    await pool.close()


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)
