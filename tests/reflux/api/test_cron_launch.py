"""The cron launcher's integrity: a retried prepare step (its completion lost) makes no
second run, and a run whose workflow does not start is recorded as failed, with why."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from infra.database import pool_for
from orchestrator.runs import connect_temporal
from orchestrator.triggers import Launch, TriggerActivities, TriggerWorkflow
from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import ORDER_FLOW, auth

NIGHTLY = """  - type: cron
    id: nightly
    schedule: "0 3 * * *"
    inputs: {order: 9}
"""


def pushed_cron_flow(api, tokens) -> str:
    workflow_id = f"launch-{uuid.uuid4().hex[:8]}"
    source = ORDER_FLOW.format(id=workflow_id) + NIGHTLY
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    return workflow_id


async def ledger(pool, workflow_id: str) -> list[dict]:
    rows = await pool.fetch(
        "SELECT id, status, error, started_by FROM runs WHERE workflow_id = $1", workflow_id
    )
    return [dict(r) for r in rows]


def test_a_retried_prepare_makes_one_run(stack: RunningStack, api, tokens):
    workflow_id = pushed_cron_flow(api, tokens)
    launcher = f"reflux-cron.{workflow_id}.nightly-2030-01-01T03:00:00Z"

    async def prepare_twice() -> tuple[list, list[dict]]:
        async with pool_for(stack.settings) as pool:
            activities = TriggerActivities(pool, stack.settings)
            env = ActivityEnvironment()
            made = []
            for attempt in (1, 2):  # attempt 1 completed, but Temporal never heard of it
                env.info = dataclasses.replace(env.info, workflow_id=launcher, attempt=attempt)
                made.append(await env.run(activities.prepare, Launch(
                    workflow_id=workflow_id, trigger_id="nightly")))  # fmt: skip
            return made, await ledger(pool, workflow_id)

    made, rows = asyncio.run(prepare_twice())
    assert made[0].run.id == made[1].run.id
    assert made[0].plan == made[1].plan
    assert [(r["id"], r["status"], r["started_by"]) for r in rows] == [
        (made[0].run.id, "running", "cron:nightly")
    ]
    from orchestrator.triggers import launch_run_id

    assert made[0].run.id == launch_run_id(workflow_id, launcher)


def test_a_run_that_does_not_start_is_recorded_failed(stack: RunningStack, api, tokens):
    workflow_id = pushed_cron_flow(api, tokens)
    launcher = f"reflux-cron.{workflow_id}.nightly-{uuid.uuid4().hex[:6]}"
    from orchestrator.triggers import launch_run_id

    run_id = launch_run_id(workflow_id, launcher)
    queue = f"launch-test-{uuid.uuid4().hex[:6]}"

    async def launch() -> list[dict]:
        client = await connect_temporal(stack.settings)
        # something already runs under the run's id: its workflow cannot start
        await client.start_workflow("nobody.runs.this", id=run_id, task_queue=f"{queue}-idle")
        async with pool_for(stack.settings) as pool:
            activities = TriggerActivities(pool, stack.settings)
            worker = Worker(client, task_queue=queue, workflows=[TriggerWorkflow],
                            activities=activities.all(),
                            workflow_runner=UnsandboxedWorkflowRunner())  # fmt: skip
            async with worker:
                try:
                    await client.execute_workflow(
                        TriggerWorkflow.run,
                        Launch(workflow_id=workflow_id, trigger_id="nightly"),
                        id=launcher,
                        task_queue=queue,
                    )
                except WorkflowFailureError:
                    pass
            await client.get_workflow_handle(run_id).terminate("test over")
            return await ledger(pool, workflow_id)

    rows = asyncio.run(launch())
    assert [(r["id"], r["status"]) for r in rows] == [(run_id, "failed")]
    assert "did not start" in rows[0]["error"]["message"]
