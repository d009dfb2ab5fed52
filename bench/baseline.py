"""The baselines: the same work as plain Temporal workflows and activities, on the same server,
with a worker in the bench process. Unsandboxed, which only favours the baseline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from nats.aio.msg import Msg
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

TIMEOUT = timedelta(seconds=30)


@activity.defn(name="bench.add_one")
async def add_one(value: int) -> int:
    """The work of one light step (`core.transform` of `value + 1`)."""
    return value + 1


@workflow.defn(name="bench.chain")
class Chain:
    """`steps` activities in sequence, each reading the one before."""

    @workflow.run
    async def run(self, steps: int, local: bool = False) -> int:
        value = 0
        for _ in range(steps):
            if local:
                value = await workflow.execute_local_activity(
                    add_one, value, start_to_close_timeout=TIMEOUT
                )
            else:
                value = await workflow.execute_activity(
                    add_one, value, start_to_close_timeout=TIMEOUT
                )
        return value


@workflow.defn(name="bench.fan_out")
class FanOut:
    """`items` activities, at most `concurrency` at a time."""

    @workflow.run
    async def run(self, items: int, concurrency: int) -> list[int]:
        slots = asyncio.Semaphore(concurrency)

        async def one(item: int) -> int:
            async with slots:
                return await workflow.execute_activity(
                    add_one, item, start_to_close_timeout=TIMEOUT
                )

        return list(await asyncio.gather(*(one(i) for i in range(items))))


@workflow.defn(name="bench.now")
class Now:
    """Returns when its first workflow task ran: how long a start takes to reach a worker."""

    @workflow.run
    async def run(self) -> float:
        return workflow.now().timestamp()


@asynccontextmanager
async def plain_worker(client: Client) -> AsyncIterator[str]:
    """A worker for the baseline workflows on a task queue of its own (yielded)."""
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[Chain, FanOut, Now],
        activities=[add_one],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=200,
    ):
        yield queue


async def execute(client: Client, queue: str, workflow_run: Any, *args: Any) -> Any:
    return await client.execute_workflow(
        workflow_run, args=list(args), id=f"bench-{uuid.uuid4().hex}", task_queue=queue
    )


async def echo(msg: Msg) -> None:
    """A raw NATS responder: the round trip every node call pays at least."""
    await msg.respond(msg.data)
