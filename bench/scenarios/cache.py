"""A step cache hit (one JetStream KV read and decoding), beside a plain NATS request of the
same bytes to an echo responder, on the stack's server."""

from __future__ import annotations

import json
import time

import nats

from bench import baseline
from bench.figures import Figure, ms, p50, p95
from bench.runner import Bench
from infra import addresses
from reflection import StepCache
from registry import object_store

NAME = "cache"

OUTPUT = {"status": 200, "json": {"rate": 1.0834, "currency": "EUR"}, "text": "x" * 400}
PARAMS = {"url": "https://api.example.com/rates", "method": "GET"}


async def run(bench: Bench) -> list[Figure]:
    hits = 200 if bench.quick else 2000
    settings = bench.stack.settings
    nc = await nats.connect(addresses(settings).nats)
    try:
        await nc.subscribe("bench.echo", cb=baseline.echo)
        cache = await StepCache.open(nc, object_store(settings), settings.inline_limit)
        await cache.put("http.request", "1.0.0", PARAMS, OUTPUT, ttl=600)
        payload = json.dumps(OUTPUT).encode()
        plain, cached = [], []
        for _ in range(hits):
            started = time.perf_counter()
            await nc.request("bench.echo", payload, timeout=5)
            plain.append(ms(time.perf_counter() - started))
            started = time.perf_counter()
            hit = await cache.get("http.request", "1.0.0", PARAMS)
            cached.append(ms(time.perf_counter() - started))
            assert hit is not None and hit.output == OUTPUT
    finally:
        await nc.close()
    return [
        Figure(
            NAME, "cache hit", p50(cached), "ms", p95(cached), p50(plain), p95(plain),
            "plain NATS request", goal=1.0,
        )
    ]  # fmt: skip
