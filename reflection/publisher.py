"""Publishing trace events to JetStream without ever holding up a step.

`emit` only appends to an in-memory buffer; a background task publishes what waits there
(after a 50 ms linger), packed into messages of many events (`reflection.stream.encode`), several
messages in flight at once, and waits for JetStream's acks. While NATS is unreachable
events stay buffered (up to `REFLUX_TRACES_BUFFER`); beyond that new events are dropped
and counted. An event leaves the buffer only once JetStream acknowledged it, and a
re-published message is stored once (`Nats-Msg-Id`), so a NATS restart loses nothing that
was acknowledged.

Every publisher answers `reflux.reflection.publishers` with its counters, which is how
`reflux status` reports drops across processes and hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections import deque
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from infra import Settings
from reflection.events import TraceEvent
from reflection.stream import MESSAGE_EVENTS, encode, ensure_stream

log = logging.getLogger("reflux.traces")

STATS_SUBJECT = "reflux.reflection.publishers"
IN_FLIGHT = 8
"""Messages awaiting JetStream's ack at once."""
ROUND = IN_FLIGHT * MESSAGE_EVENTS
"""Events taken from the buffer per round."""
MAX_BACKOFF = 5.0
LINGER = 0.05
"""Seconds the first event of a quiet spell waits for company: a step every few ms then
costs a share of one message instead of a JetStream publish and ack of its own."""


class TracePublisher:
    def __init__(self, nc: Client, settings: Settings, name: str = "") -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.buffer: deque[TraceEvent] = deque()
        self.published = 0
        self.dropped = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stats_sub: Any = None

    async def start(self) -> None:
        await ensure_stream(self.js, self.settings.traces.max_age)
        self._stats_sub = await self.nc.subscribe(STATS_SUBJECT, cb=self._answer_stats)
        self._task = asyncio.create_task(self._run())

    def emit(self, event: TraceEvent) -> None:
        """Queue an event; never blocks, never raises."""
        if len(self.buffer) >= self.settings.traces.buffer:
            self.dropped += 1
            return
        self.buffer.append(event)
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "publisher": self.name,
            "published": self.published,
            "buffered": len(self.buffer),
            "dropped": self.dropped,
        }

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the buffer is empty (True) or `timeout` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffer and loop.time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)
        return not self.buffer

    async def close(self, timeout: float = 5.0) -> None:
        if not await self.flush(timeout):
            log.warning("closing with %d trace events unpublished", len(self.buffer))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stats_sub is not None:
            with contextlib.suppress(Exception):
                await self._stats_sub.unsubscribe()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            if len(self.buffer) < ROUND:
                await asyncio.sleep(LINGER)
            self._wake.clear()
            while self.buffer:
                batch = [self.buffer[i] for i in range(min(len(self.buffer), ROUND))]
                try:
                    await asyncio.gather(*(self._publish(*m) for m in encode(batch)))
                except Exception as exc:  # NATS down or slow: keep the events, retry later
                    log.warning("trace publish failed (%d buffered): %s", len(self.buffer), exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = 0.1
                for _ in batch:
                    self.buffer.popleft()
                self.published += len(batch)

    async def _publish(self, subject: str, msg_id: str, payload: bytes) -> None:
        await self.js.publish(subject, payload, timeout=5, headers={"Nats-Msg-Id": msg_id})

    async def _answer_stats(self, msg: Msg) -> None:
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps(self.stats()).encode())


async def publisher_stats(nc: Client, wait: float = 0.3) -> list[dict[str, Any]]:
    """Every running publisher's counters (those that answer within `wait` seconds)."""
    inbox = nc.new_inbox()
    found: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            found.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(STATS_SUBJECT, b"", reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait)
    finally:
        await sub.unsubscribe()
    return found
