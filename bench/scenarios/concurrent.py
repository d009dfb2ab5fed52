"""Load: 200 runs of a 5-step workflow submitted at once, beside 200 plain Temporal
workflows of 5 activities, on the same server; the worker's peak RSS while they run, and
the `core` node service's RSS once idle again beside a bare nats-py responder's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from bench import baseline
from bench.figures import Figure
from bench.runner import Bench
from bench.scenarios.chain import chain_flow
from infra import addresses
from orchestrator import parse_spec

NAME = "concurrent"

RESPONDER = """
import asyncio, sys, nats

async def main():
    nc = await nats.connect(sys.argv[1])

    async def echo(msg):
        await msg.respond(msg.data)

    await nc.subscribe("bench.bare", cb=echo)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def run(bench: Bench) -> list[Figure]:
    runs, steps = (20, 5) if bench.quick else (200, 5)
    spec = parse_spec(chain_flow(steps))
    worker = bench.stack.pid("worker")
    peak = [rss_mb(worker)]

    async def sample() -> None:
        while True:
            peak.append(rss_mb(worker))
            await asyncio.sleep(0.05)

    async with baseline.plain_worker(bench.client) as queue:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                baseline.execute(bench.client, queue, baseline.Chain.run, steps, False)
                for _ in range(runs)
            )
        )
        took_plain = time.perf_counter() - started
    sampler = asyncio.create_task(sample())
    try:
        started = time.perf_counter()
        handles = await asyncio.gather(*(bench.submit(spec) for _ in range(runs)))
        await asyncio.gather(*(bench.wait(handle) for handle in handles))
        took_ours = time.perf_counter() - started
    finally:
        sampler.cancel()
    bench.say(f"{runs} runs: {took_ours:.2f}s; plain Temporal {took_plain:.2f}s")
    await asyncio.sleep(2)  # let the node service settle
    node_idle = rss_mb(bench.stack.pid("nodes-core"))
    bare = await bare_responder_rss(addresses(bench.stack.settings).nats)
    return [
        Figure(
            NAME, f"{runs} runs x {steps} steps: runs per second", runs / took_ours, "/s",
            baseline=runs / took_plain, baseline_name="plain Temporal activities",
            better="higher",
        ),
        Figure(
            NAME, "steps per second", runs * steps / took_ours, "/s",
            baseline=runs * steps / took_plain, baseline_name="plain Temporal activities",
            better="higher",
        ),
        Figure(NAME, "worker peak RSS under that load", max(peak), "MB", goal=500.0),
        Figure(
            NAME, "node service (core) idle RSS", node_idle, "MB", baseline=bare,
            baseline_name="bare nats-py responder", goal=80.0,
        ),
    ]  # fmt: skip


async def bare_responder_rss(url: str) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RESPONDER, url, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        await proc.wait()
