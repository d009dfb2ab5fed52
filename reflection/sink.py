"""The trace sink: JetStream → ClickHouse in batches, and the query door to the warehouse.

Acknowledge only after the insert, so a batch a crash interrupts comes back: JetStream
redelivers what was not acked. When the crash fell between insert and ack, the redelivered
events are stored already, so those of a redelivered message (`num_delivered > 1`) are
looked up by key in `traces` and only the missing ones are inserted; first deliveries are
inserted as they come, with no lookup. Each event is thus inserted once, and the rollup
(`reflection.rollup`, a materialized view counting inserted rows) counts it once. A copy
that still gets in (one event published in two messages, or two sinks racing on one
redelivery) counts twice there, but the ReplacingMergeTree folds it into the first (see
`reflection.warehouse`), so `traces` holds every event exactly once as far as any query
can tell. A line of a message that is not a valid event is logged and skipped; a message
with no valid event is terminated, so it never comes back and never holds up the stream.

The sink owns the embedded engine (chdb allows one process per directory), so it also
answers read-only SQL on `QUERY_SUBJECT` for everyone else; `reflection.sql` is the client.
Inserts and queries are blocking calls and run in worker threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel, ValidationError

from infra import RefluxError, Settings, addresses
from reflection.stream import QUERY_SUBJECT, STREAM, SUBJECT, decode, ensure_stream
from reflection.warehouse import Warehouse, open_warehouse

log = logging.getLogger("reflux.sink")

CONSUMER = "reflux-sink"
ACK_WAIT = 30.0
"""Seconds JetStream waits for an ack before redelivering: far above one batch's insert."""
LINGER = 0.2
"""Seconds a partial batch waits for more events: few large inserts beat many small ones."""
RETRY_DELAY = 2.0
"""Seconds before a batch whose insert failed is delivered again."""
QUERY_CONCURRENCY = 4
KEY_CHUNK = 1_000
"""Keys a lookup of stored events binds at once, ~60 kB: a server takes a parameter this
large (clickhouse-connect sends it as a form field) up to `http_max_field_value_size`,
128 KiB by default."""
STORED_KEYS = """
SELECT run_id, step_id, item, attempt FROM traces
WHERE (run_id, step_id, item, attempt) IN {keys:Array(Tuple(String, String, Int64, Int64))}
"""
"""Which of `keys` are in `traces`; the tuple IN prunes by the table's primary key."""

Event = Mapping[str, Any]


class QueryRequest(BaseModel):
    """What a client sends on the query subject."""

    sql: str
    parameters: dict[str, Any] = {}


class TraceSink:
    """One sink: `start`, then `run` until `stop` is set, then `close`."""

    def __init__(
        self,
        settings: Settings,
        consumer: str = CONSUMER,
        query_subject: str = QUERY_SUBJECT,
        ack_wait: float = ACK_WAIT,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.query_subject = query_subject
        self.ack_wait = ack_wait
        self.batch = max(1, settings.traces.batch)
        self.stored = 0
        """Events inserted (a redelivered one only when it was not stored yet)."""
        self.rejected = 0
        """Malformed events (message lines) skipped."""
        self._warehouse: Warehouse | None = None
        self._nc: NATS | None = None
        self._pull: BatchPull | None = None
        self._query_sub: Any = None
        self._queries: set[asyncio.Task[None]] = set()
        self._query_slots = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def start(self) -> None:
        """Open and migrate the warehouse, bind the durable consumer, answer queries."""
        self._warehouse = await asyncio.to_thread(open_warehouse, self.settings)
        await asyncio.to_thread(self._warehouse.migrate)
        self._nc = await nats.connect(
            addresses(self.settings).nats,
            name=f"reflux-sink:{self.consumer}",
            error_cb=_log_nats_error,
            max_reconnect_attempts=-1,
        )
        js = self._nc.jetstream()
        await ensure_stream(js, self.settings.traces.max_age)
        config = ConsumerConfig(
            durable_name=self.consumer,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(4 * self.batch, 20_000),
            max_waiting=16,
            filter_subject=f"{SUBJECT}.>",
        )
        await js.add_consumer(STREAM, config)
        # At least one whole message fits in a pull, or a large one would stall the stream.
        max_bytes = max(self.settings.traces.batch_bytes, self._nc.max_payload + 4096)
        self._pull = await BatchPull.start(self._nc, STREAM, self.consumer, max_bytes)
        self._query_sub = await self._nc.subscribe(
            self.query_subject, queue=CONSUMER, cb=self._on_query
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Move batches until `stop` is set; the batch in hand is stored and acked first."""
        assert self._pull is not None
        while not stop.is_set():
            messages = await self._pull.fetch(self.batch, stop)
            if messages:
                await self._store(messages, stop)

    async def close(self) -> None:
        if self._pull is not None:
            await self._pull.close()
        if self._query_sub is not None:
            with contextlib.suppress(Exception):
                await self._query_sub.unsubscribe()
        if self._queries:  # answer the queries in hand before the connection goes
            await asyncio.wait(self._queries, timeout=10)
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=5)
            await self._nc.close()
        if self._warehouse is not None:
            await asyncio.to_thread(self._warehouse.close)
        log.info("sink stopped: %d stored, %d rejected", self.stored, self.rejected)

    async def _store(self, messages: list[Msg], stop: asyncio.Event) -> None:
        fresh: list[Event] = []
        redelivered: list[Event] = []
        good: list[Msg] = []
        bad: list[Msg] = []
        for msg in messages:
            found, problems = decode(msg.data)
            for problem in problems:
                log.warning("dropping a malformed trace on %s: %s", msg.subject, problem)
            self.rejected += len(problems)
            (redelivered if msg.metadata.num_delivered > 1 else fresh).extend(found)
            (good if found else bad).append(msg)
        for msg in bad:
            await msg.term()
        if not good:
            return
        try:
            inserted = await asyncio.to_thread(self._insert, fresh, redelivered)
        except Exception as exc:  # the warehouse is down or refused: the batch comes back later
            log.warning(
                "insert of %d traces failed, retrying in %gs: %s",
                len(fresh) + len(redelivered),
                RETRY_DELAY,
                exc,
            )
            for msg in good:
                await msg.nak(delay=RETRY_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_DELAY)
            return
        for msg in good:
            await msg.ack()
        self.stored += inserted

    def _insert(self, fresh: list[Event], redelivered: list[Event]) -> int:
        """Insert `fresh` as they are and those of `redelivered` not stored yet, in one
        batch; return how many were inserted. Blocking: runs in a worker thread."""
        assert self._warehouse is not None
        events = fresh
        if redelivered:
            missing = _unstored(self._warehouse, redelivered)
            log.info(
                "%d of %d redelivered traces were stored already, inserting %d",
                len(redelivered) - len(missing),
                len(redelivered),
                len(missing),
            )
            events = fresh + missing
        self._warehouse.insert(events)
        return len(events)

    async def _on_query(self, msg: Msg) -> None:
        # nats-py runs one callback at a time per subscription: hand each query to a task so
        # a slow one does not hold up the others.
        task = asyncio.create_task(self._answer(msg))
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)

    async def _answer(self, msg: Msg) -> None:
        async with self._query_slots:
            reply = await self._run_query(msg.data)
        assert self._nc is not None
        payload = json.dumps(reply, ensure_ascii=False).encode()
        if len(payload) > self._nc.max_payload:
            payload = json.dumps(
                {
                    "error": f"the result is {len(payload)} bytes, more than NATS carries "
                    f"({self._nc.max_payload}): add a LIMIT or aggregate"
                }
            ).encode()
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(payload)

    async def _run_query(self, data: bytes) -> dict[str, Any]:
        try:
            request = QueryRequest.model_validate_json(data)
        except ValidationError as exc:
            return {"error": f"bad query request: {_first_error(exc)}"}
        assert self._warehouse is not None
        try:
            result = await asyncio.to_thread(self._warehouse.query, request.sql, request.parameters)
        except RefluxError as exc:
            return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        return result.model_dump()


class BatchPull:
    """A pull consumer read through a subscription callback. nats-py's `fetch` awaits each
    message with a timer task of its own, ~70 µs a message here (a sink built on it moved
    ~13k events/s); a callback appending to a list costs ~12 µs (the sink: ~27k/s).

    Each pull request has its own reply subject, so the status that ends a request (408
    expired, 404, 409) is told apart from one ending an older request that a partial batch
    left behind; messages for an older request are simply taken in the next batch. On
    close, requests that may still deliver are waited out (IDLE at most) and what came is
    handed back with a nak, so a stopping sink leaves nothing to sit out its ack wait."""

    IDLE = 1.0
    """Seconds one pull request waits on the server when nothing comes."""

    def __init__(self, nc: NATS, stream: str, consumer: str, max_bytes: int) -> None:
        self._nc = nc
        self._max_bytes = max_bytes
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._buffer: list[Msg] = []
        self._wanted = 0
        self._request = ""
        self._request_over = True
        """Whether the current pull request has ended (none is open at first)."""
        self._open: dict[str, float] = {}
        """Requests that may still deliver: reply subject → when the server drops it."""
        self._wake = asyncio.Event()
        self._sub: Any = None
        self._count = 0

    @classmethod
    async def start(cls, nc: NATS, stream: str, consumer: str, max_bytes: int) -> BatchPull:
        pull = cls(nc, stream, consumer, max_bytes)
        pull._sub = await nc.subscribe(f"{pull._inbox}.*", cb=pull._on_message)
        return pull

    async def fetch(self, batch: int, stop: asyncio.Event) -> list[Msg]:
        """Up to `batch` messages (and about `max_bytes`): what is waiting, plus what comes
        within LINGER of the first; empty after IDLE seconds of nothing. Once a batch is
        taken the next is asked for at once, so it arrives while this one is stored."""
        if len(self._buffer) < batch and self._request_over:
            await self._ask(batch)
        loop = asyncio.get_running_loop()
        idle_until = loop.time() + self.IDLE + 0.1
        first = loop.time() if self._buffer else None
        while len(self._buffer) < batch and not self._request_over and not stop.is_set():
            if first is None and self._buffer:
                first = loop.time()
            left = (first + LINGER if first is not None else idle_until) - loop.time()
            if left <= 0:
                break
            self._wake.clear()
            await _first_of(self._wake, stop, timeout=left)
        taken, self._buffer = self._buffer[:batch], self._buffer[batch:]
        if taken and self._request_over and not stop.is_set():
            await self._ask(batch)
        return taken

    async def _ask(self, batch: int) -> None:
        """Send a pull request for what the buffer lacks; it becomes the current one."""
        self._count += 1
        self._request = f"{self._inbox}.{self._count}"
        self._request_over = False
        self._wanted = batch
        now = asyncio.get_running_loop().time()
        self._open = {r: t for r, t in self._open.items() if t > now}
        self._open[self._request] = now + self.IDLE
        ask = {
            "batch": max(1, batch - len(self._buffer)),
            "max_bytes": self._max_bytes,
            "expires": int(self.IDLE * 1e9),
        }
        await self._nc.publish(self._next, json.dumps(ask).encode(), reply=self._request)

    async def close(self) -> None:
        """Stop pulling and hand back what was delivered but not taken."""
        loop = asyncio.get_running_loop()
        while self._open and loop.time() < max(self._open.values()) + 0.05:
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        for msg in self._buffer:
            with contextlib.suppress(Exception):
                await msg.nak()
        self._buffer = []

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status") if not msg.data else None
        if status is None:
            self._buffer.append(msg)
            if len(self._buffer) == 1 or len(self._buffer) >= self._wanted:
                self._wake.set()
        elif status != "100":
            self._open.pop(msg.subject, None)
            if msg.subject == self._request:
                description = headers.get("Description", "")
                if status == "409" and "MaxBytes" not in description:  # not a full batch:
                    # e.g. the consumer was deleted or changed under us
                    log.warning("pull request ended: %s", description or status)
                self._request_over = True
                self._wake.set()


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of `events` is set, or `timeout` seconds."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _unstored(warehouse: Warehouse, events: Sequence[Event]) -> list[Event]:
    """Those of `events` whose key is not in `traces` yet, one per key (a later copy wins,
    as in the table): a query per `KEY_CHUNK` keys."""
    by_key = {(e["run_id"], e["step_id"], e["item"], e["attempt"]): e for e in events}
    keys = list(by_key)
    for start in range(0, len(keys), KEY_CHUNK):
        found = warehouse.query(STORED_KEYS, {"keys": keys[start : start + KEY_CHUNK]})
        for row in found.rows:
            by_key.pop(tuple(row), None)
    return list(by_key.values())


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


async def run_sink(
    settings: Settings,
    on_ready: Callable[[], None] | None = None,
    *,
    consumer: str = CONSUMER,
    query_subject: str = QUERY_SUBJECT,
    ack_wait: float = ACK_WAIT,
) -> None:
    """Run a sink until SIGTERM or SIGINT; `on_ready` is called once it consumes and answers."""
    # A batch allocates ~20 objects per event and keeps none past its insert; at the default
    # threshold (700) the cyclic collector runs every few dozen events and took ~45% of the
    # decoding time (bench/trace_ingest.py). Collect far less often, and never rescan what
    # start-up created.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sink = TraceSink(settings, consumer=consumer, query_subject=query_subject, ack_wait=ack_wait)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sink.start()
        if on_ready is not None:
            on_ready()
        await sink.run(stop)
    finally:
        await sink.close()


async def sink_backlog(nc: NATS, consumer: str = CONSUMER) -> int | None:
    """Events in the stream the sink has not stored yet (undelivered plus unacknowledged),
    or None when the sink never ran here."""
    try:
        info = await nc.jetstream().consumer_info(STREAM, consumer, timeout=2)
    except Exception:  # no stream, no consumer, or JetStream unavailable: nothing to say
        return None
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)
