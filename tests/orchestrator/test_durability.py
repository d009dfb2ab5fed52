"""A run survives the Temporal dev server, or the worker running its local-activity steps,
being SIGKILLed and restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from infra.database import pool_for
from orchestrator.runs import connect_temporal, run_handle, wait_run
from registry.runs import get_run
from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack
from tests.helpers.waiting import eventually_async, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory):
    """Its own stack: killing Temporal must not disturb the session's other tests."""
    running = start_test_stack(tmp_path_factory.mktemp("durable-home"))
    try:
        yield running
    finally:
        stop_test_stack(running)


def record(stack: RunningStack, name: str) -> dict:
    state = json.loads((stack.home / "stack.json").read_text())
    return next(p for p in state["processes"] if p["name"] == name)


def test_run_completes_after_temporal_is_killed_and_restarted(own_stack: RunningStack, tmp_path):
    stack = own_stack
    flow = stack.write(
        "durable.yaml",
        """
        id: durable
        steps:
        """
        + "".join(
            f"""
          - id: s{i}
            node: test.sleep@1
            with: {{seconds: 0.3, label: "{i}", record_dir: "{tmp_path}"}}
            {"needs: [s" + str(i - 1) + "]" if i else ""}
            """
            for i in range(12)
        ),
    )
    started = stack.cli("run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    # Let a few steps finish, then kill the server without warning.
    wait_for(
        lambda: (
            (tmp_path / "events.jsonl").exists()
            and len((tmp_path / "events.jsonl").read_text().splitlines()) >= 3
        ),
        what="3 steps",
    )
    temporal = record(stack, "temporal")
    os.kill(temporal["pid"], signal.SIGKILL)
    stack.up()  # notices the dead server and restarts it on the same database file
    assert record(stack, "temporal")["pid"] != temporal["pid"]

    async def finish():
        settings = stack.settings
        client = await connect_temporal(settings)
        return await wait_run(run_handle(client, run_id))

    result = asyncio.run(finish())
    assert result.status == "completed", result.error
    assert [result.steps[f"s{i}"].output["label"] for i in range(12)] == [str(i) for i in range(12)]
    labels = [
        json.loads(line)["label"] for line in (tmp_path / "events.jsonl").read_text().splitlines()
    ]
    assert sorted(set(labels), key=int) == [str(i) for i in range(12)]


def test_local_steps_survive_the_worker_being_killed(own_stack: RunningStack, tmp_path):
    """Local activities are recorded when their workflow task completes: a worker killed
    mid-chain loses the ones since, and the next worker runs them again. Every step still
    runs, and every delivery of an attempt carries the same idempotency key."""
    stack = own_stack
    flow = stack.write(
        "local-chain.yaml",
        "id: local-chain\nsteps:\n"
        + "".join(
            f"  - {{id: s{i}, node: test.sleep@1, local: true,"
            f" with: {{seconds: 0.3, label: '{i}', record_dir: '{tmp_path}'}}"
            + (f", needs: [s{i - 1}]" if i else "")
            + "}\n"
            for i in range(12)
        ),
    )
    started = stack.cli("run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    events = tmp_path / "events.jsonl"
    wait_for(lambda: events.exists() and len(events.read_text().splitlines()) >= 3, what="3 steps")
    worker = record(stack, "worker")
    os.kill(worker["pid"], signal.SIGKILL)
    stack.up()  # notices the dead worker and starts another
    assert record(stack, "worker")["pid"] != worker["pid"]

    async def finish():
        client = await connect_temporal(stack.settings)
        return await wait_run(run_handle(client, run_id))

    result = asyncio.run(finish())
    assert result.status == "completed", result.error
    assert [result.steps[f"s{i}"].output["label"] for i in range(12)] == [str(i) for i in range(12)]
    calls = [json.loads(line) for line in events.read_text().splitlines()]
    assert {c["step"] for c in calls} == {f"s{i}" for i in range(12)}  # each ran at least once
    for call in calls:
        assert call["key"] == f"{run_id}/{call['step']}/1", call
    # The chain's first steps were not yet in the history when the worker died: they ran
    # again, under the keys they had the first time.
    assert len(calls) > 12, calls


@pytest.mark.parametrize("local", [False, True], ids=["regular", "local"])
def test_cancelled_run_cancels_its_running_steps(own_stack: RunningStack, local: bool):
    """A local step holds the workflow task open: the query and the cancel reach the run
    when the worker heartbeats the task (about every 8 s), and the step is cancelled."""
    flow = own_stack.write(
        f"cancel-{local}.yaml",
        f"""
        id: cancel-me
        steps:
          - {{id: slow, node: test.sleep@1, local: {str(local).lower()}, with: {{seconds: 60}}}}
          - {{id: later, node: core.transform@1, needs: [slow], with: {{value: 1}}}}
        """,
    )
    started = own_stack.cli("run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    async def cancel():
        client = await connect_temporal(own_stack.settings)
        handle = run_handle(client, run_id)

        async def slow_running() -> bool:
            return bool((await handle.query("progress"))["slow"]["status"] == "running")

        # the query reaches a run holding a local step only at the task's heartbeat (~8 s)
        await eventually_async(slow_running, timeout=60, what="the slow step running")
        await handle.cancel()
        return await wait_run(handle)

    result = asyncio.run(cancel())
    assert result.status == "cancelled", result
    assert result.steps["slow"].status == "cancelled"
    assert result.steps["later"].status == "cancelled"

    async def ledger() -> str:
        async with pool_for(own_stack.settings) as pool:
            return (await get_run(pool, run_id)).status

    assert wait_for(lambda: asyncio.run(ledger()) == "cancelled", what="the ledger's end")
