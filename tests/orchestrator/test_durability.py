"""A run survives the Temporal dev server being SIGKILLed and restarted on the same file."""

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
from tests.helpers.waiting import wait_for

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


def test_cancelled_run_cancels_its_running_steps(own_stack: RunningStack):
    flow = own_stack.write(
        "cancel.yaml",
        """
        id: cancel-me
        steps:
          - {id: slow, node: test.sleep@1, with: {seconds: 30}}
          - {id: later, node: core.transform@1, needs: [slow], with: {value: 1}}
        """,
    )
    started = own_stack.cli("run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    async def cancel():
        client = await connect_temporal(own_stack.settings)
        handle = run_handle(client, run_id)
        while (await handle.query("progress"))["slow"]["status"] != "running":
            await asyncio.sleep(0.05)
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
