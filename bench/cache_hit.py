"""Step cache hit latency vs a plain NATS request round trip, on one nats-server in the same
run (the baseline is the floor: a cache hit is one KV read plus decoding).

Usage: python bench/cache_hit.py [--hits 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reflection.cache import StepCache  # noqa: E402
from registry.objects import LocalObjectStore  # noqa: E402
from tests.helpers.natsserver import start_nats, stop_nats  # noqa: E402
from tests.helpers.ports import free_port  # noqa: E402

OUTPUT = {"status": 200, "json": {"rate": 1.0834, "currency": "EUR"}, "text": "x" * 400}
PARAMS = {"url": "https://api.example.com/rates", "method": "GET"}


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 3),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 3),
    }


async def measure(url: str, store_dir: Path, hits: int) -> dict[str, object]:
    nc = await nats.connect(url)
    try:

        async def echo(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("bench.echo", cb=echo)
        payload = json.dumps(OUTPUT).encode()
        plain = []
        for _ in range(hits):
            started = time.perf_counter()
            await nc.request("bench.echo", payload, timeout=2)
            plain.append(time.perf_counter() - started)

        cache = await StepCache.open(nc, LocalObjectStore(store_dir), 256 * 1024)
        await cache.put("http.request", "1.0.0", PARAMS, OUTPUT, ttl=600)
        cached = []
        for _ in range(hits):
            started = time.perf_counter()
            hit = await cache.get("http.request", "1.0.0", PARAMS)
            cached.append(time.perf_counter() - started)
            assert hit is not None
        base, ours = quantiles(plain), quantiles(cached)
        return {
            "hits": hits,
            "plain_nats_request": base,
            "cache_hit": ours,
            "cache_vs_plain_p50": round(ours["p50_ms"] / base["p50_ms"], 2),
            "goal": "cache hit p50 <= 1 ms (DESIGN.md)",
        }
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hits", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reflux-bench-"))
    port = free_port()
    server = start_nats(port, work / "js")
    try:
        report = asyncio.run(measure(f"nats://127.0.0.1:{port}", work / "objects", args.hits))
    finally:
        stop_nats(server)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
