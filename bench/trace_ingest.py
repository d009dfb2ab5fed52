"""Trace ingestion end to end: events handed to the TracePublisher → queryable in ClickHouse
through the trace sink, in events/s, beside the raw JetStream publish rate measured on the
same nats-server in the same run. Baselines: one Python process publishing the same
pre-serialized events with `js.publish`, nothing else: one event per message with 256 in
flight (the plain way), and packed as the publisher packs them (the transport's ceiling).

The sink runs as its own process (`reflux reflection sink`, embedded chdb engine under a
temporary REFLUX_HOME), as under `reflux up`; "queryable" means `SELECT count() FROM traces`
through the sink's query subject returns every event.

Usage: python bench/trace_ingest.py [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infra.settings import Settings  # noqa: E402
from reflection.events import TraceEvent  # noqa: E402
from reflection.publisher import IN_FLIGHT, TracePublisher  # noqa: E402
from reflection.query import query  # noqa: E402
from reflection.stream import STREAM, SUBJECT, encode, message_id  # noqa: E402
from tests.helpers.natsserver import start_nats, stop_nats  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

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
    url: str, payloads: list[tuple[str, bytes]], events: int, in_flight: int
) -> float:
    """Events/s for plain `js.publish` of pre-serialized messages, `in_flight` at a time."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"], storage="file")
        started = time.perf_counter()
        for i in range(0, len(payloads), in_flight):
            await asyncio.gather(
                *(
                    js.publish("bench.raw.default", data, headers={"Nats-Msg-Id": key})
                    for key, data in payloads[i : i + in_flight]
                )
            )
        took = time.perf_counter() - started
        await js.delete_stream("BENCH_RAW")
        return events / took
    finally:
        await nc.close()


async def publish(settings: Settings, url: str, batch: list[TraceEvent]) -> float:
    """Hand `batch` to a TracePublisher; seconds until JetStream acknowledged all of it."""
    nc = await nats.connect(url)
    try:
        publisher = TracePublisher(nc, settings, name="bench")
        await publisher.start()
        started = time.perf_counter()
        for event in batch:
            publisher.emit(event)
        await publisher.flush(timeout=600)
        took = time.perf_counter() - started
        assert publisher.dropped == 0 and not publisher.buffer, "raise REFLUX_TRACES_BUFFER"
        await publisher.close()
        return took
    finally:
        await nc.close()


async def queryable(settings: Settings, count: int) -> None:
    """Return once `count` events are in ClickHouse (asked every 50 ms through the sink)."""
    while (await query(settings, "SELECT count() FROM traces")).rows[0][0] < count:
        await asyncio.sleep(0.05)


async def end_to_end(settings: Settings, url: str, batch: list[TraceEvent]) -> dict[str, float]:
    started = time.perf_counter()
    waiting = asyncio.create_task(queryable(settings, len(batch)))
    published = await publish(settings, url, batch)
    await waiting
    return {"publish_s": published, "queryable_s": time.perf_counter() - started}


def start_sink(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    ready = home / f"sink-{time.monotonic_ns()}.ready"
    log = open(home / "sink.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "reflection", "sink"],
        env={**env, "REFLUX_READY_FILE": str(ready)},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the sink did not start: see {home / 'sink.log'}")
        time.sleep(0.05)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reflux-bench-"))
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REFLUX_HOME": str(work),
        "REFLUX_NATS_URL": url,
        "REFLUX_TRACES_BUFFER": str(args.events + 1),
        "PYTHONPATH": str(REPO),
    }
    env.pop("REFLUX_CLICKHOUSE_URL", None)
    os.environ.update(env)
    settings = Settings()
    server = start_nats(port, work / "js")
    sink = None
    try:
        print(f"building {args.events} events…", file=sys.stderr)
        baseline = events(args.events, "raw")
        single = [(message_id(*e.key), e.model_dump_json().encode()) for e in baseline]
        packed = [(key, data) for _, key, data in encode(baseline)]
        print("baseline: raw JetStream publish…", file=sys.stderr)
        raw = asyncio.run(raw_publish_rate(url, single, args.events, 256))
        raw_packed = asyncio.run(raw_publish_rate(url, packed, args.events, IN_FLIGHT))
        sink = start_sink(env, work)
        ours = events(args.events, "e2e")
        print("end to end: publisher → JetStream → sink → ClickHouse…", file=sys.stderr)
        timing = asyncio.run(end_to_end(settings, url, ours))
        print("the sink alone: draining a stream filled while it was stopped…", file=sys.stderr)
        sink.terminate()
        sink.wait(timeout=60)
        asyncio.run(publish(settings, url, events(args.events, "backlog")))
        sink = start_sink(env, work)
        started = time.perf_counter()
        asyncio.run(queryable(settings, 2 * args.events))
        drained = time.perf_counter() - started
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=60)
        stop_nats(server)
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure, for its sink.log
    rate = args.events / timing["queryable_s"]
    print(
        json.dumps(
            {
                "events": args.events,
                "subject": f"{SUBJECT}.default → {STREAM}",
                "raw_publish_one_event_per_message_per_s": round(raw),
                "raw_publish_packed_per_s": round(raw_packed),
                "publisher_per_s": round(args.events / timing["publish_s"]),
                "end_to_end_queryable_per_s": round(rate),
                "sink_alone_drain_per_s": round(args.events / drained),
                "end_to_end_vs_raw_one_per_message": round(rate / raw, 2),
                "end_to_end_vs_raw_packed": round(rate / raw_packed, 2),
                "goal": "end to end >= 50k events/s (DESIGN.md)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
