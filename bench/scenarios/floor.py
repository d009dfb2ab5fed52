"""The floor under every step: one bare NATS request/reply to the `core.transform` node
service (the node's own parsing, validation and reply included), beside a raw NATS round trip
to an echo responder in the bench process, on the same server."""

from __future__ import annotations

import time

import nats

from bench import baseline
from bench.figures import Figure, ms, p50, p95
from bench.runner import Bench
from infra import addresses
from nodes import NodeReply, NodeRequest, exact_subject

NAME = "floor"


async def run(bench: Bench) -> list[Figure]:
    count = 200 if bench.quick else 2000
    nc = await nats.connect(addresses(bench.stack.settings).nats)
    try:
        await nc.subscribe("bench.echo", cb=baseline.echo)
        version = await _served_version(bench)
        subject = exact_subject("core.transform", version)
        request = NodeRequest(params={"value": 1}, run_id="bench", step_id="floor")
        payload = request.model_dump_json().encode()
        node, echo = [], []
        for i in range(count + 50):  # the first 50 warm up
            started = time.perf_counter()
            reply = await nc.request(subject, payload, timeout=5)
            took_node = time.perf_counter() - started
            started = time.perf_counter()
            await nc.request("bench.echo", payload, timeout=5)
            took_echo = time.perf_counter() - started
            if i >= 50:
                node.append(ms(took_node))
                echo.append(ms(took_echo))
        assert NodeReply.model_validate_json(reply.data).output == {"value": 1}
    finally:
        await nc.close()
    return [
        Figure(
            NAME, "node request/reply", p50(node), "ms", p95(node), p50(echo), p95(echo),
            "raw NATS echo",
        )
    ]  # fmt: skip


async def _served_version(bench: Bench) -> str:
    from registry import NodeRegistry

    catalog = await NodeRegistry(bench.pool, bench.stack.settings.user).catalog()
    return catalog.resolve("core.transform", "1")
