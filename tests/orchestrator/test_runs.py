"""Reading a run's state from Temporal (`orchestrator.runs.live_state`)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from infra.errors import ServiceError
from orchestrator.runs import connect_temporal, live_state, run_handle
from tests.helpers.stack import RunningStack


def test_a_running_run_no_worker_answers_for_is_a_service_error(stack: RunningStack):
    """A run started on a task queue no worker polls: Temporal has it running, but nothing
    can tell its steps' states. One clear error after the timeout, not a hang or a crash."""

    async def read() -> tuple[str, float]:
        client = await connect_temporal(stack.settings)
        run_id = f"unpolled-{uuid.uuid4().hex[:8]}"
        await client.start_workflow("reflux.dag", {}, id=run_id, task_queue="nobody-polls-this")
        started = time.monotonic()
        try:
            with pytest.raises(ServiceError) as raised:
                await live_state(client, run_id, timeout=1)
            return str(raised.value), time.monotonic() - started
        finally:
            await run_handle(client, run_id).terminate()

    message, took = asyncio.run(read())
    assert message.startswith("run unpolled-") and "no worker told its state" in message
    assert "\n" not in message and took < 10
