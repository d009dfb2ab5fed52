"""The trace sink against the session's NATS: JetStream → ClickHouse exactly once, and the
query subject. Each sink runs as its own process with its own REFLUX_HOME (so its chdb
directory is private), its own durable consumer and its own query subject. The stream is
shared with other tests, so a test publishes on its own namespace's subject, counts only
its own run ids, and purges its subject (malformed messages included) when done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError

from infra.errors import ServiceError
from infra.settings import Settings
from reflection.events import TraceEvent
from reflection.sql import NO_SINK, query
from reflection.stream import STREAM, ensure_stream, message_id, subject_for
from tests.helpers.clickhouse_http import REPO, clickhouse_http_server
from tests.helpers.stack import RunningStack, nats_url, settings_from
from tests.helpers.waiting import eventually_async, wait_for

SINK = textwrap.dedent(
    """
    import asyncio, logging, pathlib, sys
    from infra.settings import Settings
    from reflection.sink import run_sink
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    ready = pathlib.Path(sys.argv[1])
    asyncio.run(
        run_sink(
            Settings(),
            lambda: ready.write_text("ready"),
            consumer=sys.argv[2],
            query_subject=sys.argv[3],
            ack_wait=float(sys.argv[4]),
        )
    )
    """
)


@dataclass
class SinkSetup:
    """Where one test's sink lives and how to reach it."""

    stack: RunningStack
    home: Path
    consumer: str
    subject: str
    namespace: str
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return settings_from(self.env)

    def start(self, ack_wait: float = 5) -> SinkProcess:
        """A sink process; what a killed one held comes back after `ack_wait` seconds."""
        ready = self.home / f"ready-{uuid.uuid4().hex[:6]}"
        log_path = self.home / f"sink-{uuid.uuid4().hex[:6]}.log"
        log = open(log_path, "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-c", SINK, str(ready), self.consumer, self.subject, str(ack_wait)],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        sink = SinkProcess(proc, log_path)
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=120, what="the sink")
        assert proc.poll() is None, f"the sink exited {proc.returncode}: {sink.output()}"
        return sink

    async def query(self, sql: str, **parameters) -> list[list]:
        return (await query(self.settings, sql, parameters, subject=self.subject)).rows

    async def count(self, run: str) -> tuple[int, int]:
        rows = await self.query(
            "SELECT count(), uniqExact(run_id, step_id, item, attempt) FROM traces "
            "WHERE startsWith(run_id, {run:String})",
            run=run,
        )
        return rows[0][0], rows[0][1]

    async def wait_count(self, run: str, expected: int, timeout: float = 120) -> None:
        async def arrived() -> tuple[int, int]:
            got = await self.count(run)
            assert got[0] >= expected, f"only {got[0]} of {expected} traces arrived"
            return got

        got = await eventually_async(arrived, timeout=timeout, every=0.1)
        assert got == (expected, expected), f"stored {got}, expected {expected} once each"


@dataclass
class SinkProcess:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, as `reflux down` does; return the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
async def sink_setup(stack: RunningStack, tmp_path: Path) -> AsyncIterator[SinkSetup]:
    tag = uuid.uuid4().hex[:10]
    home = tmp_path / "sink-home"
    home.mkdir()
    env = {
        **stack.env,
        "REFLUX_HOME": str(home),
        "REFLUX_NATS_URL": nats_url(stack),
        "REFLUX_TRACES_BATCH": "1000",
        "PYTHONPATH": str(REPO),
    }
    env.pop("REFLUX_CLICKHOUSE_URL", None)
    setup = SinkSetup(
        stack, home, f"test-sink-{tag}", f"test.reflection.sql.{tag}", f"test-{tag}", env
    )
    yield setup
    nc = await nats.connect(nats_url(stack))
    try:
        js = nc.jetstream()
        await js.purge_stream(STREAM, subject=subject_for(setup.namespace))
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(STREAM, setup.consumer)
    finally:
        await nc.close()


@pytest.fixture
async def js(stack: RunningStack) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(nats_url(stack))
    jetstream = nc.jetstream()
    await ensure_stream(jetstream, timedelta(days=1))
    yield jetstream
    await nc.close()


@pytest.fixture
def sinks() -> Iterator[list[SinkProcess]]:
    """Sinks a test started; any still running at the end are stopped."""
    started: list[SinkProcess] = []
    yield started
    for sink in started:
        sink.stop()


def trace(setup: SinkSetup, run: str, i: int, attempt: int = 1) -> TraceEvent:
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
    return TraceEvent.timed(
        start,
        start + timedelta(milliseconds=5),
        run_id=f"{run}-{i // 10}",
        step_id=f"step-{i % 10}",
        attempt=attempt,
        node="core.transform",
        node_version="1.0.0",
        status="ok",
        namespace=setup.namespace,
    )


async def publish(js, events: list[TraceEvent], msg_id_suffix: str = "") -> None:
    """Publish as the step activity does: the key as Nats-Msg-Id (plus a suffix to step
    outside the stream's dedupe window, as a publish retried minutes later would)."""
    for chunk in range(0, len(events), 500):
        await asyncio.gather(
            *(
                js.publish(
                    subject_for(e.namespace),
                    e.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": message_id(*e.key) + msg_id_suffix},
                )
                for e in events[chunk : chunk + 500]
            )
        )


async def test_events_become_queryable_exactly_once(sink_setup: SinkSetup, js, sinks):
    run = f"q-{uuid.uuid4().hex[:8]}"
    sinks.append(sink := sink_setup.start())
    events = [trace(sink_setup, run, i) for i in range(1_000)]
    await publish(js, events[:600])
    await publish(js, events[:100])  # same ids: JetStream's window drops these
    await publish(js, events[100:200], msg_id_suffix="/again")  # stored twice by JetStream
    for bad in (
        b"not json",
        b'{"run_id": "x"}',
        trace(sink_setup, run, 5_000)
        .model_dump_json()
        .replace('"item":-1', '"item":' + "9" * 30)
        .encode(),
    ):
        await js.publish(subject_for(sink_setup.namespace), bad)
    await publish(js, events[600:])  # after the bad ones: the stream keeps flowing

    await sink_setup.wait_count(run, 1_000)
    assert (await sink_setup.count(run)) == (1_000, 1_000)
    assert sink.output().count("dropping a malformed trace") >= 3
    assert "item: Input should be less than or equal to" in sink.output()  # beyond Int64

    # Everything was acknowledged or terminated: nothing waits for redelivery.
    async def settled() -> bool:
        info = await js.consumer_info(STREAM, sink_setup.consumer)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually_async(settled, timeout=60)
    assert sink.stop() == 0
    assert "sink stopped" in sink.output()


async def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    sink_setup: SinkSetup, js, sinks
):
    run = f"k-{uuid.uuid4().hex[:8]}"
    total = 20_000
    events = [trace(sink_setup, run, i) for i in range(total)]
    sinks.append(first := sink_setup.start())
    publishing = asyncio.create_task(publish(js, events))

    async def some_stored() -> bool:
        return (await sink_setup.count(run))[0] > 0

    await eventually_async(some_stored, timeout=60)
    first.kill()  # mid-stream: a batch may be fetched, inserted and not yet acked
    await publishing
    sinks.append(second := sink_setup.start())  # same home, same durable consumer
    assert (await sink_setup.count(run))[0] < total, "the kill came too late to test anything"
    await sink_setup.wait_count(run, total)
    assert second.stop() == 0


async def test_sigterm_mid_stream_hands_back_everything_it_held(sink_setup: SinkSetup, js, sinks):
    run = f"t-{uuid.uuid4().hex[:8]}"
    total = 20_000
    events = [trace(sink_setup, run, i) for i in range(total)]
    sinks.append(first := sink_setup.start(ack_wait=120))
    publishing = asyncio.create_task(publish(js, events))

    async def some_stored() -> bool:
        return (await sink_setup.count(run))[0] > 0

    await eventually_async(some_stored, timeout=60)
    assert first.stop() == 0, first.output()  # SIGTERM: the batch in hand is stored first
    assert "sink stopped" in first.output()
    await publishing
    # Whatever the first sink held unstored it handed back (nak), so the next one gets it at
    # once; a message it had just dropped would come back only after the 120 s ack wait.
    sinks.append(sink_setup.start(ack_wait=120))
    await sink_setup.wait_count(run, total, timeout=60)


async def test_the_query_subject_answers_only_reads(sink_setup: SinkSetup, js, sinks):
    sinks.append(sink_setup.start())
    nc = await nats.connect(nats_url(sink_setup.stack))
    try:
        for sql in ("DROP TABLE traces", "INSERT INTO traces (run_id) VALUES ('x')"):
            request = json.dumps({"sql": sql}).encode()
            reply = json.loads((await nc.request(sink_setup.subject, request, timeout=30)).data)
            assert set(reply) == {"error"} and "\n" not in reply["error"]
            assert "only SELECT, WITH, SHOW and DESCRIBE" in reply["error"]
        garbage = await nc.request(sink_setup.subject, b"{", timeout=30)
        assert "bad query request" in json.loads(garbage.data)["error"]
    finally:
        await nc.close()
    with pytest.raises(ServiceError, match="only SELECT") as caught:
        await sink_setup.query("ALTER TABLE traces DELETE WHERE 1")
    assert "\n" not in str(caught.value)
    rows = await sink_setup.query("SELECT {n:UInt8} + 1 AS two, 'x' AS s", n=1)
    assert rows == [[2, "x"]]
    assert (await sink_setup.query("SHOW TABLES")) == [
        ["schema_version"], ["trace_minutes"], ["trace_minutes_mv"], ["trace_retries"],
        ["trace_retries_mv"], ["traces"],
    ]  # fmt: skip


async def test_no_sink_is_a_clear_error(sink_setup: SinkSetup):
    with pytest.raises(ServiceError) as caught:
        await query(sink_setup.settings, "SELECT 1", subject=sink_setup.subject)
    assert str(caught.value) == NO_SINK


async def test_with_a_server_queries_go_to_it_directly(
    sink_setup: SinkSetup, js, sinks, tmp_path: Path
):
    run = f"h-{uuid.uuid4().hex[:8]}"
    with clickhouse_http_server(tmp_path / "server") as url:
        sink_setup.env["REFLUX_CLICKHOUSE_URL"] = f"{url}/traces_db"
        sinks.append(sink := sink_setup.start())
        events = [trace(sink_setup, run, i) for i in range(300)]
        await publish(js, events)
        await publish(js, events[:50], msg_id_suffix="/again")
        await sink_setup.wait_count(run, 300)
        assert sink.stop() == 0  # no sink now: the answer comes from the server itself
        result = await query(
            sink_setup.settings,
            "SELECT count() FROM traces WHERE startsWith(run_id, {run:String})",
            {"run": run},
            subject=sink_setup.subject,
        )
        assert result.rows == [[300]]
