"""An attempt lost with its worker (SIGKILLed while the step ran) is traced, by the attempt
that Temporal retries on the next worker: status error, error class WorkerLost."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from temporalio.api.enums.v1 import PendingActivityState

from orchestrator.runs import connect_temporal, run_handle, wait_run
from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory):
    """Its own stack: killing the worker must not disturb the session's other tests."""
    running = start_test_stack(tmp_path_factory.mktemp("worker-lost-home"))
    try:
        yield running
    finally:
        stop_test_stack(running)


def worker_pid(stack: RunningStack) -> int:
    state = json.loads((stack.home / "stack.json").read_text())
    return int(next(p for p in state["processes"] if p["name"] == "worker")["pid"])


def attempt_started(stack: RunningStack, run_id: str) -> bool:
    """Temporal has handed the run's step activity to a worker."""

    async def ask() -> bool:
        client = await connect_temporal(stack.settings)
        described = await run_handle(client, run_id).describe()
        return any(
            a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for a in described.raw_description.pending_activities
        )

    return asyncio.run(ask())


def test_an_attempt_lost_with_its_worker_is_traced(own_stack: RunningStack):
    stack = own_stack
    flow = stack.write(
        "lost.yaml",
        """
        id: lost
        steps:
          - id: slow
            node: test.sleep@1
            local: false
            timeout: 3s
            retry: {max_attempts: 3, initial_interval: 1s}
            with: {seconds: 1.5, label: x}
        """,
    )
    started = stack.cli("run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    wait_for(lambda: attempt_started(stack, run_id), timeout=30, what="the first attempt")
    killed = worker_pid(stack)
    os.kill(killed, signal.SIGKILL)
    stack.up()  # notices the dead worker and starts another
    assert worker_pid(stack) != killed

    async def finish():
        client = await connect_temporal(stack.settings)
        return await wait_run(run_handle(client, run_id))

    result = asyncio.run(finish())
    assert result.status == "completed", result.error
    assert result.steps["slow"].attempts == 2

    def stored() -> list[dict] | None:
        done = stack.cli("traces", run_id, "--json")
        assert done.returncode == 0, done.stderr
        events = [e for e in json.loads(done.stdout) if e["step_id"] == "slow"]
        return events if len(events) >= 2 else None

    events = sorted(wait_for(stored, timeout=60, every=0.3, what="both attempts' traces"),
                    key=lambda e: e["attempt"])  # fmt: skip
    assert [(e["attempt"], e["status"]) for e in events] == [(1, "error"), (2, "ok")], events
    lost = events[0]
    assert lost["error_class"] == "WorkerLost", lost
    assert "lost with its worker" in lost["error"]
    assert lost["node"] == "test.sleep" and lost["workflow_id"] == "lost"
    assert lost["start"] < lost["end"] <= events[1]["start"], events
