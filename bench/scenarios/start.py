"""Start latency: submit (catalog snapshot, pins, ledger row, Temporal start) → the first
step running (its workflow-clock start), beside a plain Temporal start → its workflow's
first task, on the same server and on a stock dev server. All read the same clock: the
machine's."""

from __future__ import annotations

import time

from bench import baseline
from bench.figures import Figure, ms, p50, p95
from bench.runner import Bench
from orchestrator import parse_spec

NAME = "start"


async def run(bench: Bench) -> list[Figure]:
    runs = 5 if bench.quick else 50
    spec = parse_spec("id: start\nsteps:\n  - {id: a, node: core.transform@1, with: {value: 1}}\n")
    ours, plain, stock = [], [], []
    stock_client = await bench.stock()
    async with (
        baseline.plain_worker(bench.client) as queue,
        baseline.plain_worker(stock_client) as stock_queue,
    ):
        for i in range(runs + 3):  # the first 3 warm up
            submitted = time.time()
            began = await baseline.execute(stock_client, stock_queue, baseline.Now.run)
            took_stock = began - submitted
            submitted = time.time()
            began = await baseline.execute(bench.client, queue, baseline.Now.run)
            took_plain = began - submitted
            submitted = time.time()
            result = await bench.run(spec)
            started = result.steps["a"].started_at
            assert started is not None
            if i >= 3:
                ours.append(ms(started - submitted))
                plain.append(ms(took_plain))
                stock.append(ms(took_stock))
    return [
        Figure(
            NAME, f"submit -> first step running ({runs} runs)", p50(ours), "ms", p95(ours),
            p50(plain), p95(plain), "plain Temporal start", goal=25.0,
        ),
        Figure(
            NAME, f"submit -> first step running ({runs} runs)", p50(ours), "ms", p95(ours),
            p50(stock), p95(stock), "plain Temporal start, stock dev server",
        ),
    ]  # fmt: skip
