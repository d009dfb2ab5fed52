"""The trace publisher against its own nats-server, stopped and restarted under it: events
wait in a bounded buffer while NATS is away, overflow is counted, and nothing JetStream
acknowledged is lost across the restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from infra.ports import free_port
from infra.settings import Settings, TracesSettings
from reflection.events import TraceEvent
from reflection.publisher import TracePublisher
from reflection.publisher import log as publisher_log
from reflection.stream import STREAM, SUBJECT, decode
from tests.helpers.natsserver import start_nats, stop_nats
from tests.helpers.waiting import eventually_async

pytestmark = pytest.mark.timeout(120)


def event(run_id: str, n: int) -> TraceEvent:
    now = datetime.now(UTC)
    return TraceEvent(
        run_id=run_id,
        step_id=f"s{n}",
        node="core.transform",
        node_version="1.0.0",
        status="ok",
        start=now,
        end=now,
    )


async def stored(url: str) -> int:
    """Distinct events in the stream (a message may hold several)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"{SUBJECT}.>", stream=STREAM)
        keys = set()
        while True:
            try:
                batch = await sub.fetch(1000, timeout=0.5)
            except TimeoutError:
                break
            for msg in batch:
                rows, problems = decode(msg.data)
                assert not problems
                keys.update((r["run_id"], r["step_id"], r["item"], r["attempt"]) for r in rows)
                await msg.ack()
        await sub.unsubscribe()
        return len(keys)
    finally:
        await nc.close()


async def test_buffer_while_nats_is_down_then_publish_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_nats(port, tmp_path / "js")
    settings = Settings(home=tmp_path, traces=TracesSettings(buffer=150))
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    publisher = TracePublisher(nc, settings, name="test")
    await publisher.start()
    try:
        for n in range(100):
            publisher.emit(event("before", n))
        assert await publisher.flush(10)
        assert publisher.published == 100 and await stored(url) == 100

        stop_nats(server)
        with caplog.at_level("WARNING", logger=publisher_log.name):
            for n in range(200):  # 150 fit in the buffer, 50 are dropped and counted
                publisher.emit(event("during", n))
            assert publisher.stats()["buffered"] == 150 and publisher.dropped == 50
            # A publish attempt fails while NATS is away; the events stay buffered.
            await eventually_async(
                lambda: any("trace publish failed" in r.getMessage() for r in caplog.records),
                timeout=30,
                what="a failed publish",
            )
        assert publisher.stats()["buffered"] == 150 and publisher.dropped == 50

        server = start_nats(port, tmp_path / "js")  # same store: file storage survives
        assert await publisher.flush(20), publisher.stats()
        assert publisher.published == 250
        assert await stored(url) == 250  # nothing acknowledged before the restart was lost
    finally:
        await publisher.close(1)
        await nc.close()
        stop_nats(server)


async def test_republished_events_are_stored_once(tmp_path: Path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_nats(port, tmp_path / "js")
    nc = await nats.connect(url)
    publisher = TracePublisher(nc, Settings(home=tmp_path), name="test")
    await publisher.start()
    try:
        for _ in range(3):  # the same keys three times, as retries after a lost ack would
            for n in range(20):
                publisher.emit(event("again", n))
            assert await publisher.flush(10)
        assert await stored(url) == 20
        messages = (await nc.jetstream().stream_info(STREAM)).state.messages
        assert messages == 1  # one message of 20 events, republished twice under the same id
    finally:
        await publisher.close(1)
        await nc.close()
        stop_nats(server)
