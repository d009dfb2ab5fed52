"""The run ledger: a start recorded twice (a launcher retried with the same run id) is one
row, as it was first recorded."""

from __future__ import annotations

import asyncpg

from registry.runs import get_run, record_end, record_start


async def test_recording_a_start_twice_keeps_the_first(db: asyncpg.Pool):
    pins = {"a": {"node": "n", "version": "1.0.0"}}
    first = await record_start(db, "r-1", "flow", None, pins, "cron:x")
    again = await record_start(db, "r-1", "flow", None, {}, "someone else")
    assert (first, again) == (True, False)
    run = await get_run(db, "r-1")
    assert (run.status, run.started_by, run.pins) == ("running", "cron:x", pins)


async def test_a_start_recorded_again_after_the_end_does_not_reopen_the_run(db: asyncpg.Pool):
    await record_start(db, "r-2", "flow", None, {}, "cron:x")
    await record_end(db, "r-2", "completed")
    await record_start(db, "r-2", "flow", None, {}, "cron:x")
    assert (await get_run(db, "r-2")).status == "completed"
