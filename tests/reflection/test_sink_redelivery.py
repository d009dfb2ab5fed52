"""The trace sink against a redelivery of what it had stored already. A first sink dies
between insert and ack (its first ack of this test's messages ends the process, so the
crash falls exactly there); a second sink on the same home and durable consumer receives
the batch again. The rollup `trace_minutes` counts inserted rows, so it shows an event
inserted twice that `traces` (read with FINAL) would hide. The stack, fixtures and helpers
are test_sink's."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from reflection.sink import _unstored
from reflection.stream import STREAM, decode, encode, subject_for
from reflection.warehouse import Warehouse
from tests.helpers.waiting import eventually_async
from tests.reflection import test_sink, test_warehouse
from tests.reflection.test_sink import SinkProcess, SinkSetup, trace

sink_setup, js, sinks = test_sink.sink_setup, test_sink.js, test_sink.sinks
"""test_sink's fixtures: its sink processes, each with its own home and consumer."""
http_server, settings, warehouse = (
    test_warehouse.http_server,
    test_warehouse.settings,
    test_warehouse.warehouse,
)
"""test_warehouse's: an empty warehouse on the embedded engine and on a server."""

ACK_WAIT = 3.0
"""Seconds before what the first sink held comes back."""
CRASHED = 17
"""The exit code of a sink that died at its ack."""
CRASH_AT_ACK = f"""
import os
from nats.aio.msg import Msg

_ack = Msg.ack
_subject = os.environ["REFLUX_TEST_CRASH_SUBJECT"]


async def _crash_at_ack(self, *args, **kwargs):
    if self.subject == _subject:
        os._exit({CRASHED})
    await _ack(self, *args, **kwargs)


Msg.ack = _crash_at_ack
"""
"""A `sitecustomize` for the first sink: nats-py's ack of a message on the test's subject
ends the process at once, after the insert that precedes every ack."""


def start_crashing(setup: SinkSetup, tmp_path: Path) -> SinkProcess:
    """A sink that dies (exit CRASHED) when it first acks one of the test's messages."""
    hook = tmp_path / "crash-at-ack"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_AT_ACK)
    saved = dict(setup.env)
    setup.env["PYTHONPATH"] = f"{hook}{os.pathsep}{saved['PYTHONPATH']}"
    setup.env["REFLUX_TEST_CRASH_SUBJECT"] = subject_for(setup.namespace)
    try:
        return setup.start(ack_wait=ACK_WAIT)
    finally:
        setup.env.clear()
        setup.env.update(saved)


async def died(sink: SinkProcess) -> None:
    code = await asyncio.to_thread(sink.proc.wait, 60)
    assert code == CRASHED, sink.output()


async def publish_packed(js, events) -> None:
    """Publish as a TracePublisher under load does: many events a message."""
    for subject, msg_id, payload in encode(events):
        await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})


async def settled(js, setup: SinkSetup) -> None:
    """Wait until every message was acknowledged: redeliveries included."""

    async def done() -> bool:
        info = await js.consumer_info(STREAM, setup.consumer)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually_async(done, timeout=60, every=0.1)


async def rolled_up(setup: SinkSetup) -> int:
    rows = await setup.query(
        "SELECT sum(attempts) FROM trace_minutes WHERE namespace = {ns:String}",
        ns=setup.namespace,
    )
    return rows[0][0]


async def test_a_batch_redelivered_after_its_insert_counts_once(
    sink_setup: SinkSetup, js, sinks, tmp_path: Path
):
    run = f"r-{uuid.uuid4().hex[:8]}"
    events = [trace(sink_setup, run, i) for i in range(400)]
    sinks.append(first := start_crashing(sink_setup, tmp_path))
    await publish_packed(js, events[:200])
    await died(first)  # inserted, never acked
    await publish_packed(js, events[200:])  # first deliveries, for the next sink
    sinks.append(second := sink_setup.start(ack_wait=ACK_WAIT))
    await sink_setup.wait_count(run, 400)
    await settled(js, sink_setup)

    assert (await sink_setup.count(run)) == (400, 400)
    assert await rolled_up(sink_setup) == 400
    assert "redelivered traces were stored already, inserting 0" in second.output()
    assert second.stop() == 0


async def test_a_redelivered_batch_stores_the_events_it_lacks(
    sink_setup: SinkSetup, js, sinks, tmp_path: Path
):
    run = f"m-{uuid.uuid4().hex[:8]}"
    events = [trace(sink_setup, run, i) for i in range(400)]
    stored, lost = events[:200], events[200:]
    sinks.append(first := start_crashing(sink_setup, tmp_path))
    await publish_packed(js, stored)
    await died(first)
    due = asyncio.get_running_loop().time() + ACK_WAIT  # `stored` comes back from then

    async def no_pull_waiting() -> bool:  # the dead sink's requests are gone: none takes `lost`
        return (await js.consumer_info(STREAM, sink_setup.consumer)).num_waiting == 0

    await eventually_async(no_pull_waiting, timeout=30)
    await publish_packed(js, lost)
    # Another reader takes `lost` and hands it back: delivered once, never stored.
    reader = await js.pull_subscribe_bind(durable=sink_setup.consumer, stream=STREAM)
    (msg,) = await reader.fetch(1, timeout=10)
    assert msg.subject == subject_for(sink_setup.namespace)
    assert [e["run_id"] for e in decode(msg.data)[0]] == [e.run_id for e in lost]
    await msg.nak()
    await reader.unsubscribe()
    await asyncio.sleep(due - asyncio.get_running_loop().time())  # the server's ack timer

    sinks.append(second := sink_setup.start(ack_wait=ACK_WAIT))
    await sink_setup.wait_count(run, 400)
    await settled(js, sink_setup)

    assert (await sink_setup.count(run)) == (400, 400)
    assert await rolled_up(sink_setup) == 400
    # Both came back in the sink's first batch: the stored half skipped, the lost inserted.
    assert "redelivered traces were stored already, inserting 200" in second.output()
    assert second.stop() == 0


def test_the_stored_key_lookup_binds_thousands_of_keys_on_either_engine(warehouse: Warehouse):
    """`_unstored` binds up to `KEY_CHUNK` keys in one parameter (~60 kB): the embedded
    engine takes it as a call argument, a server as a form field (clickhouse-connect sends
    binds over 4 kB as multipart/form-data), and both answer which keys are stored."""
    stored = [
        {"run_id": f"run-{i:05d}", "step_id": "fetch", "item": -1, "attempt": 1}
        for i in range(1500)
    ]
    warehouse.insert([test_warehouse.event(e["run_id"]) for e in stored])
    fresh = [e | {"run_id": f"new-{i:05d}"} for i, e in enumerate(stored[:700])]
    again = stored[::3]  # a redelivered batch: a third stored already, the rest new
    assert _unstored(warehouse, again + fresh) == fresh
    assert _unstored(warehouse, stored) == []
