"""Trace ingestion end to end: events handed to a TracePublisher → queryable in ClickHouse
through the stack's trace sink, beside the raw JetStream publish rate on the same server:
one event per message with 256 in flight (the plain way), and packed as the publisher packs
them (the transport's ceiling, reported for reference)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import nats

from bench.figures import Figure
from bench.runner import Bench
from infra import Settings, addresses
from reflection import IN_FLIGHT, TraceEvent, TracePublisher, encode, message_id, query

NAME = "ingest"
NODES = ["http.request", "core.transform", "llm.complete", "core.switch"]


def events(count: int, run_prefix: str) -> list[TraceEvent]:
    """`count` realistic events: 20-step runs, some errors and retries, metrics, context."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    made = []
    for i in range(count):
        failed = i % 17 == 0
        made.append(
            TraceEvent.timed(
                start + timedelta(milliseconds=i),
                start + timedelta(milliseconds=i + 3 + i % 40),
                run_id=f"{run_prefix}-{i // 20}",
                step_id=f"step-{i % 20}",
                attempt=2 if i % 13 == 0 else 1,
                node=NODES[i % len(NODES)],
                node_version="1.2.0",
                status="error" if failed else "ok",
                inputs_hash=f"{i:064x}",
                metrics={"bytes": float(i % 5000), "items": float(i % 7)},
                error="upstream returned 503 Service Unavailable" if failed else None,
                error_class="HttpStatusError" if failed else None,
                cost_tokens=(i % 900) if i % 4 == 2 else None,
                context={"region": "eu-west-1", "tenant": f"t{i % 9}"},
                workflow_id="bench",
                workflow_version=3,
                replica="nodes-http@host:1234",
            )
        )
    return made


async def raw_publish_rate(
    url: str, payloads: list[tuple[str, bytes]], count: int, in_flight: int
) -> float:
    """Events/s for plain `js.publish` of pre-serialized messages, `in_flight` at a time."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = f"BENCH_{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=stream, subjects=[f"bench.{stream}.>"], storage="file")
        started = time.perf_counter()
        for i in range(0, len(payloads), in_flight):
            await asyncio.gather(
                *(
                    js.publish(f"bench.{stream}.x", data, headers={"Nats-Msg-Id": key})
                    for key, data in payloads[i : i + in_flight]
                )
            )
        took = time.perf_counter() - started
        await js.delete_stream(stream)
        return count / took
    finally:
        await nc.close()


async def end_to_end(settings: Settings, url: str, batch: list[TraceEvent], prefix: str) -> float:
    """Seconds from handing `batch` to a publisher until all of it is queryable."""
    nc = await nats.connect(url)
    try:
        publisher = TracePublisher(nc, settings, name="bench")
        await publisher.start()
        sql = "SELECT count() FROM traces WHERE startsWith(run_id, {prefix:String})"
        started = time.perf_counter()
        for event in batch:
            publisher.emit(event)
        while (await query(settings, sql, {"prefix": prefix}, nc=nc)).rows[0][0] < len(batch):
            await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        assert publisher.dropped == 0, "events were dropped"
        await publisher.close()
        return took
    finally:
        await nc.close()


async def run(bench: Bench) -> list[Figure]:
    count = 5_000 if bench.quick else 100_000
    settings = bench.stack.settings
    settings = settings.model_copy(
        update={"traces": settings.traces.model_copy(update={"buffer": count + 1})}
    )
    url = addresses(settings).nats
    bench.say(f"building {count} events …")
    raw = events(count, f"raw-{uuid.uuid4().hex[:6]}")
    single = [(message_id(*e.key), e.model_dump_json().encode()) for e in raw]
    packed = [(key, data) for _, key, data in encode(raw)]
    one_per_message = await raw_publish_rate(url, single, count, 256)
    ceiling = await raw_publish_rate(url, packed, count, IN_FLIGHT)
    prefix = f"e2e-{uuid.uuid4().hex[:6]}"
    took = await end_to_end(settings, url, events(count, prefix), prefix)
    ours = count / took
    return [
        Figure(
            NAME, f"{count} events published -> queryable", ours, "/s",
            baseline=one_per_message, baseline_name="raw JetStream publish, 1 event/message",
            better="higher", goal=50_000,
        ),
        Figure(
            NAME, "the same, beside the transport's ceiling", ours, "/s", baseline=ceiling,
            baseline_name="raw JetStream publish, packed as ours (no sink)", better="higher",
        ),
    ]  # fmt: skip
