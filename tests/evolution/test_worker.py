"""The evolution worker: it creates the Critic's Schedule as REFLUX_CRITIC_EVERY says (and a
scheduled scan files proposals), and at start gives every unfinished proposal that lost its
lifecycle workflow a new one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import Client

from evolution import Finding, ProposalStore
from infra.database import create_pool, database_url
from orchestrator import connect_temporal
from tests.evolution.loop import EvolutionWorker, unique
from tests.helpers.stack import RunningStack

SCHEDULE = "reflux-critic"


async def test_the_worker_schedules_the_critic_and_a_scan_runs(stack: RunningStack):
    worker = EvolutionWorker(stack, extra={"REFLUX_CRITIC_EVERY": "1h"})
    client: Client = await connect_temporal(worker.settings)
    worker.start()
    try:
        handle = client.get_schedule_handle(SCHEDULE)
        described = await handle.describe()
        [interval] = described.schedule.spec.intervals
        assert interval.every == timedelta(hours=1)
        await handle.trigger()
        for _ in range(100):
            described = await handle.describe()
            if described.info.recent_actions:
                break
            await asyncio.sleep(0.1)
        started = described.info.recent_actions[0].action
        run_id = started.first_execution_run_id
        scanned = client.get_workflow_handle(started.workflow_id, run_id=run_id)
        assert isinstance(await asyncio.wait_for(scanned.result(), 60), int)
    finally:
        worker.stop()
        await client.get_schedule_handle(SCHEDULE).delete()


async def test_a_proposal_without_its_lifecycle_gets_one_when_the_worker_starts(stack):
    worker = EvolutionWorker(stack)
    settings = worker.settings
    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), max_size=4)
    try:
        finding = Finding(kind="finding", workflow_id=unique("lost"), title="filed, then a crash")
        proposal, created = await ProposalStore(pool).file(finding, "critic", "critic")
        assert created
        with pytest.raises(Exception):  # noqa: B017 - no workflow yet: Temporal says not found
            await client.get_workflow_handle(proposal.id).describe()
        worker.start()
        try:
            described = await client.get_workflow_handle(proposal.id).describe()
            assert described.task_queue == worker.queue
            state = await client.get_workflow_handle(proposal.id).query("state")
            assert state["status"] == "open"
        finally:
            worker.stop()
    finally:
        await pool.close()
