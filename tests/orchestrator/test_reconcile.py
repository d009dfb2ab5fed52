"""The ledger's reconciler against the session's Temporal: a row left `running` whose
execution ended (terminated from outside, or its end lost) is closed with Temporal's verdict.

Each test's ledger is a scratch database of its own: the runs start on the session's worker,
which records their ends in the session's ledger, never in this one; so here every end is
"lost", as if PostgreSQL had been down when it came.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from infra.database import pool_for
from orchestrator.reconcile import NEVER_STARTED, Closed, reconcile_forever, reconcile_once
from orchestrator.runs import connect_temporal, submit, wait_run
from orchestrator.validate import validate_text
from registry.nodes import NodeRegistry
from registry.runs import get_run, record_start
from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack
from tests.helpers.waiting import eventually_async

pytestmark = pytest.mark.timeout(120)

NOW = timedelta(0)
"""A grace of nothing: the rows these tests made a moment ago are old enough."""


@pytest.fixture
async def client(stack: RunningStack) -> Client:
    return await connect_temporal(stack.settings)


async def start(stack: RunningStack, client: Client, ledger: asyncpg.Pool, text: str):
    """Start a run of `text` on the session's worker, recorded in `ledger`."""
    async with pool_for(stack.settings) as registry:
        catalog = await NodeRegistry(registry, "tests").catalog()
    spec, problems = validate_text(textwrap.dedent(text), "flow.yaml", catalog)
    assert spec is not None, problems
    return await submit(client, ledger, stack.settings, spec, catalog, {})


async def reconciled(client: Client, ledger: asyncpg.Pool, **options) -> list[Closed]:
    """A pass that closed something (visibility may lag behind an end by a moment)."""
    return await eventually_async(
        lambda: reconcile_once(client, ledger, grace=NOW, **options),
        timeout=30,
        every=0.2,
        what="the reconciler to close a run",
    )


async def test_a_run_terminated_in_temporal_is_closed_as_failed(stack, client, db):
    handle = await start(
        stack,
        client,
        db,
        """
        id: reconcile-terminated
        steps:
          - {id: wait, node: core.delay@1, with: {duration: 1h}}
        """,
    )
    assert await reconcile_once(client, db, grace=NOW) == []  # running: left alone
    await handle.terminate(reason="stopped by the test")

    closed = await reconciled(client, db)
    message = "terminated in Temporal: stopped by the test"
    assert closed == [Closed(handle.id, "failed", {"class": "TerminatedError", "message": message})]
    run = await get_run(db, handle.id)
    assert (run.status, run.error["message"]) == ("failed", message)
    assert run.ended_at is not None
    assert await reconcile_once(client, db, grace=NOW) == []  # closed once


async def test_a_run_whose_end_was_lost_is_closed_as_it_ended(stack, client, db, tmp_path: Path):
    completed = await start(
        stack,
        client,
        db,
        """
        id: reconcile-completed
        steps:
          - {id: one, node: core.transform@1, with: {value: 1}}
        """,
    )
    failed = await start(
        stack,
        client,
        db,
        f"""
        id: reconcile-failed
        steps:
          - id: boom
            node: test.flaky@1
            with: {{record_dir: "{tmp_path}", failures: 5, retryable: false}}
        """,
    )
    assert (await wait_run(completed)).status == "completed"
    assert (await wait_run(failed)).status == "failed"
    assert (await get_run(db, completed.id)).status == "running"  # the end never came here

    closed: dict[str, Closed] = {}

    async def both() -> bool:
        closed.update((c.run_id, c) for c in await reconcile_once(client, db, grace=NOW))
        return len(closed) == 2

    await eventually_async(both, timeout=30, every=0.2, what="both runs closed")
    assert closed[completed.id] == Closed(completed.id, "completed", None)
    assert (await get_run(db, completed.id)).status == "completed"
    error = (await get_run(db, failed.id)).error
    assert (error["step"], error["class"]) == ("boom", "FlakyError"), error
    assert closed[failed.id].error == error


async def test_a_run_temporal_never_had_is_failed_after_a_while(client, db):
    run_id = f"never-{uuid.uuid4().hex[:12]}"
    await record_start(db, run_id, "never", None, {}, "test")
    # Young enough that its start may still be on the way: left alone.
    assert await reconcile_once(client, db, grace=NOW) == []
    assert (await get_run(db, run_id)).status == "running"

    closed = await reconcile_once(client, db, grace=NOW, missing_after=NOW)
    assert closed == [Closed(run_id, "failed", {"class": "RunError", "message": NEVER_STARTED})]
    assert (await get_run(db, run_id)).status == "failed"


async def test_rows_within_the_grace_are_not_looked_at(client, db):
    run_id = f"young-{uuid.uuid4().hex[:12]}"
    await record_start(db, run_id, "young", None, {}, "test")
    closed = await reconcile_once(client, db, missing_after=NOW)  # the default grace, 30 s
    assert closed == []
    assert (await get_run(db, run_id)).status == "running"


async def test_passes_at_once_close_each_row_once_in_small_batches(client, db):
    ids = [f"many-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(7)]
    for run_id in ids:
        await record_start(db, run_id, "many", None, {}, "test")
    passes = await asyncio.gather(
        *(reconcile_once(client, db, grace=NOW, missing_after=NOW, batch=3) for _ in range(3))
    )
    closed = [c.run_id for found in passes for c in found]
    assert sorted(closed) == sorted(ids)  # each once, by whichever pass got there first
    for run_id in ids:
        assert (await get_run(db, run_id)).status == "failed"


async def test_the_periodic_pass_closes_rows_until_stopped(client, db):
    stop = asyncio.Event()
    looping = asyncio.create_task(
        reconcile_forever(
            client, db, timedelta(milliseconds=100), stop, grace=NOW, missing_after=NOW
        )
    )
    try:
        for n in range(2):  # one row before a pass, one between passes
            run_id = f"loop-{n}-{uuid.uuid4().hex[:6]}"
            await record_start(db, run_id, "loop", None, {}, "test")

            async def closed(run_id: str = run_id) -> bool:
                return (await get_run(db, run_id)).status == "failed"

            await eventually_async(closed, timeout=10, what=f"{run_id} closed by the loop")
    finally:
        stop.set()
        await asyncio.wait_for(looping, 5)


@pytest.fixture(scope="module")
def reconciling_stack(tmp_path_factory: pytest.TempPathFactory):
    """A stack whose worker reconciles every second (the default is every minute)."""
    running = start_test_stack(
        tmp_path_factory.mktemp("reconcile-home"), REFLUX_TEMPORAL_RECONCILE_EVERY="PT1S"
    )
    try:
        yield running
    finally:
        stop_test_stack(running)


async def test_the_worker_reconciles_its_ledger(reconciling_stack: RunningStack):
    stack = reconciling_stack
    flow = stack.write(
        "held.yaml", "id: held\nsteps:\n  - {id: wait, node: core.delay@1, with: {duration: 1h}}\n"
    )
    started = await asyncio.to_thread(stack.cli, "run", str(flow), "--no-wait")
    assert started.returncode == 0, started.stderr
    terminated = started.stdout.strip()
    client = await connect_temporal(stack.settings)
    await client.get_workflow_handle(terminated).terminate(reason="by hand")
    never = f"never-{uuid.uuid4().hex[:12]}"
    async with pool_for(stack.settings) as pool:
        await record_start(pool, never, "held", None, {}, "test")
        # Both rows older than the grace (30 s), the second older than 10 minutes.
        await pool.execute(
            "UPDATE runs SET started_at = now() - CASE id WHEN $1 THEN interval '1 minute'"
            " ELSE interval '1 hour' END WHERE id = ANY($2)",
            terminated, [terminated, never],
        )  # fmt: skip

        async def ended() -> bool:
            runs = [await get_run(pool, run_id) for run_id in (terminated, never)]
            return all(run.status == "failed" for run in runs)

        await eventually_async(ended, timeout=30, what="the worker to close both rows")
        assert (await get_run(pool, terminated)).error["message"] == (
            "terminated in Temporal: by hand"
        )
        assert (await get_run(pool, never)).error["message"] == NEVER_STARTED
