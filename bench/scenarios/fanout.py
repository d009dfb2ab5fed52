"""Fan-out: one `for_each` step over 100 items with concurrency 20 (`core.transform@1` per
item), beside a plain Temporal workflow running 100 activities 20 at a time."""

from __future__ import annotations

import time

from bench import baseline
from bench.figures import Figure, p50
from bench.runner import Bench
from orchestrator import parse_spec

NAME = "fanout"


async def run(bench: Bench) -> list[Figure]:
    items, concurrency, rounds = (20, 5, 2) if bench.quick else (100, 20, 5)
    spec = parse_spec(
        f"id: fanout\nsteps:\n  - id: each\n    node: core.transform@1\n"
        f"    for_each: {list(range(items))}\n    concurrency: {concurrency}\n"
        "    with: {value: '{{ item + 1 }}'}\n"
    )
    ours, plain = [], []
    async with baseline.plain_worker(bench.client) as queue:
        for i in range(rounds + 1):  # the first round warms up
            started = time.perf_counter()
            await baseline.execute(bench.client, queue, baseline.FanOut.run, items, concurrency)
            took_plain = time.perf_counter() - started
            started = time.perf_counter()
            result = await bench.run(spec)
            took_ours = time.perf_counter() - started
            assert len(result.steps["each"].output) == items
            if i:
                ours.append(took_ours)
                plain.append(took_plain)
                bench.say(f"round {i}/{rounds}: {took_ours:.2f}s; plain Temporal {took_plain:.2f}s")
    rate, base = items / p50(ours), items / p50(plain)
    return [
        Figure(
            NAME, f"{items} items, concurrency {concurrency}: whole run", p50(ours) * 1000, "ms",
            max(ours) * 1000, p50(plain) * 1000, max(plain) * 1000, "plain Temporal activities",
        ),
        Figure(
            NAME, "steps per second", rate, "/s", None, base, None, "plain Temporal activities",
            better="higher",
        ),
    ]  # fmt: skip
