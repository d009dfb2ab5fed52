"""A large fan-out: one `for_each` over 100,000 items (`core.transform@1` each), which runs
in child workflows of `REFLUX_FANOUT_SHARD_ITEMS` items. Reported: the whole run, items per
second beside plain Temporal activities (1,000 in one workflow, about as many as one plain
history holds comfortably) and beside the same 1,000 items in the run's own workflow (the
path a fan-out of one shard takes), the size of the run's history and of its largest
shard's, the largest payload in any of them, and the worker's peak RSS meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio.client import Client

from bench import baseline
from bench.figures import Figure
from bench.runner import Bench
from bench.scenarios.concurrent import rss_mb
from orchestrator import parse_spec, payload_sizes

NAME = "shards"

FLOW = """
id: shards
inputs:
  items: {type: array}
steps:
  - id: each
    node: core.transform@1
    for_each: "{{ inputs.items }}"
    with: {value: "{{ item + 1 }}"}
"""


async def history_of(client: Client, workflow_id: str) -> dict[str, Any]:
    """Events, bytes and the largest payload of one workflow's history; its children."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    sizes = payload_sizes(history)
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    return {
        "events": len(history.events),
        "bytes": sum(e.ByteSize() for e in history.events),
        "largest_payload": max(sizes, default=0),
        "children": children,
    }


async def run(bench: Bench) -> list[Figure]:
    items, small = (2_000, 200) if bench.quick else (100_000, 1_000)
    spec = parse_spec(FLOW)
    worker = bench.stack.pid("worker")

    async with baseline.plain_worker(bench.client) as queue:
        await baseline.execute(bench.client, queue, baseline.FanOut.run, 50, 50)  # warm up
        started = time.perf_counter()
        await baseline.execute(bench.client, queue, baseline.FanOut.run, small, 100)
        plain_rate = small / (time.perf_counter() - started)
    await bench.run(spec, {"items": list(range(50))})  # warm up
    started = time.perf_counter()
    one = await bench.run(spec, {"items": list(range(small))})
    one_shard_rate = small / (time.perf_counter() - started)
    assert len(one.steps["each"].output) == small

    peak = [rss_mb(worker)]

    async def sample() -> None:
        while True:
            peak.append(rss_mb(worker))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        started = time.perf_counter()
        result = await bench.run(spec, {"items": list(range(items))})
        took = time.perf_counter() - started
    finally:
        sampler.cancel()
    outputs = result.steps["each"].output
    assert outputs == [{"value": i + 1} for i in range(items)], "outputs in order"
    parent = await history_of(bench.client, result.run_id)
    shards = [await history_of(bench.client, c) for c in parent["children"]]
    biggest = max(shards, key=lambda h: h["bytes"])
    largest_payload = max([parent["largest_payload"], *(h["largest_payload"] for h in shards)])
    bench.say(
        f"{items} items in {len(shards)} shards: {took:.1f}s ({items / took:,.0f}/s); "
        f"plain Temporal {plain_rate:,.0f}/s, one shard in the run {one_shard_rate:,.0f}/s; "
        f"run history {parent['events']} events {parent['bytes'] / 1e3:.0f} kB, largest shard "
        f"{biggest['events']} events {biggest['bytes'] / 1e3:.0f} kB, largest payload "
        f"{largest_payload / 1e3:.0f} kB; worker peak RSS {max(peak):.0f} MB"
    )
    base = f"plain Temporal activities, {small} in one workflow"
    return [
        Figure(NAME, f"{items:,} items in {len(shards)} shards: whole run", took, "s"),
        Figure(
            NAME, "items per second", items / took, "/s", baseline=plain_rate,
            baseline_name=base, better="higher",
        ),
        Figure(
            NAME, f"items per second, {small:,} in the run's own workflow", one_shard_rate,
            "/s", baseline=plain_rate, baseline_name=base, better="higher",
        ),
        Figure(NAME, f"run's history ({parent['events']} events)", parent["bytes"] / 1e3, "kB"),
        Figure(
            NAME, f"largest shard's history ({biggest['events']} events)",
            biggest["bytes"] / 1e3, "kB",
        ),
        Figure(NAME, "largest payload in any history", largest_payload / 1e3, "kB", goal=256.0),
        Figure(NAME, "worker peak RSS meanwhile", max(peak), "MB", goal=500.0),
    ]  # fmt: skip
