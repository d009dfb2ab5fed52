"""The Temporal worker: runs `DagWorkflow`, the cron launcher and their activities, listens
for event triggers, and reconciles the run ledger with Temporal (`orchestrator.reconcile`,
every `REFLUX_TEMPORAL_RECONCILE_EVERY`), until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable

import nats
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from infra import Settings, addresses, create_pool, database_url
from orchestrator.activities import RunActivities, StepActivities
from orchestrator.listener import EventListener
from orchestrator.reconcile import reconcile_forever
from orchestrator.runs import connect_temporal
from orchestrator.triggers import TriggerActivities, TriggerWorkflow
from orchestrator.workflow import WORKFLOWS
from reflection import StepCache, TracePublisher
from registry import object_store

log = logging.getLogger("reflux.worker")

# The workflows run unsandboxed: users write YAML, not workflow code, and our own workflow
# code is checked against the sandbox's rules by replaying real histories under it
# (tests/orchestrator/test_replay.py). The sandbox re-imports and proxies per activation,
# which cost 1.4 ms of CPU per step here (bench/README.md).
RUNNER = UnsandboxedWorkflowRunner()


async def run_worker(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), min_size=1, max_size=4)
    nc = await nats.connect(
        addresses(settings).nats,
        name="reflux-worker",
        error_cb=_log_nats_error,
        max_reconnect_attempts=-1,
    )
    traces = TracePublisher(nc, settings, name=f"worker {socket.gethostname()}:{os.getpid()}")
    await traces.start()
    store = object_store(settings)
    cache = await StepCache.open(nc, store, settings.inline_limit)
    steps = StepActivities(nc, store, settings.inline_limit, traces, cache)
    worker = Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=[*WORKFLOWS, TriggerWorkflow],
        workflow_runner=RUNNER,
        activities=[
            steps.call_node,
            RunActivities(pool, traces).record_end,
            *TriggerActivities(pool, settings).all(),
        ],
        max_concurrent_activities=settings.temporal.max_concurrent_activities,
        graceful_shutdown_timeout=settings.temporal.graceful_shutdown,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    listener = EventListener(nc, pool, client, settings)
    await listener.start()
    reconciling = asyncio.create_task(
        reconcile_forever(client, pool, settings.temporal.reconcile_every, stop)
    )
    if on_ready is not None:
        on_ready()
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopped], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await reconciling
    await listener.stop()
    if not running.done():
        await worker.shutdown()
    await running
    await traces.close()
    await nc.drain()
    await pool.close()


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)
