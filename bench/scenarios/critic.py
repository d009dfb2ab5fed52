"""The Critic's scan over a large window: 1,000,000 synthetic trace events (100,000 with
`--quick`) in a private embedded ClickHouse, the full `scan()` (every detector, coverage,
contrasts) beside a plain `GROUP BY step_id, node_version` aggregate over the same rows,
both through the same `Warehouse.query` (so both pay its `final` read the same way).

No stack: the scenario opens its own embedded warehouse in a temporary directory (never the
bench stack's chdb, which its trace sink owns), writes the events in batches and times each
query median-of-5 after a warm-up, the two interleaved.

The traffic, in the generator style of `ingest` (deterministic, index arithmetic, plus a
seeded generator for the failures): three workflows, each with an older version (the first
third of the window) and the live one; `orders.fetch` fails with a transient 503 30 % of the
time, retried up to 3 times (the old version did not retry), on two node versions and three
replicas; `orders.price` repeats 50 inputs at 40 ms a call; `mail.render` repeats too but
takes no time (no cache pays for itself there); `report.query` runs into its 10 s limit.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.figures import Figure, ms
from bench.runner import BenchOptions
from evolution import critic
from infra import Settings
from nodes import builtin_catalog
from orchestrator import parse_spec
from registry import Catalog

NAME = "critic"
STACK = False
"""A private embedded ClickHouse in a temporary directory: no stack."""

EVENTS = 1_000_000
QUICK_EVENTS = 100_000
BATCH = 100_000
REPEATS = 5
RATIO_GOAL = 3.0
SCAN_GOAL_MS = 2000.0
SEED = 20261202
WINDOW = timedelta(hours=1)
PLAIN_SQL = (
    "SELECT step_id, node_version, count(), avg(latency_ms) FROM traces "
    "GROUP BY step_id, node_version"
)
PLAIN = "plain GROUP BY step_id, node_version"

SPECS = {
    "orders": """\
id: orders
namespace: shop
steps:
  - id: fetch
    node: http.request@1
    retry: {max_attempts: 3}
    timeout: 10s
    with: {url: "https://shop.example/orders"}
  - id: price
    node: core.transform@1
    with: {value: "{{ steps.fetch.output.body }}"}
  - id: notify
    node: http.request@1
    timeout: 30s
    with: {url: "https://shop.example/notify", method: POST}
""",
    "mail": """\
id: mail
namespace: shop
steps:
  - id: render
    node: core.transform@1
    with: {value: "hello"}
  - id: send
    node: http.request@1
    with: {url: "https://mail.example/send", method: POST}
""",
    "report": """\
id: report
namespace: finance
steps:
  - id: query
    node: http.request@1
    timeout: 10s
    with: {url: "https://warehouse.example/q"}
  - id: total
    node: core.transform@1
    with: {value: "{{ steps.query.output.body }}"}
""",
}
LIVE = 2
"""Every workflow's live version; version 1 ran the first third of the window."""
STEPS: dict[str, list[str]] = {
    "orders": ["fetch", "price", "notify"],
    "mail": ["render", "send"],
    "report": ["query", "total"],
}
NAMESPACES = {"orders": "shop", "mail": "shop", "report": "finance"}
REPLICAS = ("nodes-http@a:1", "nodes-http@b:1", "nodes-http@c:1")


def contexts() -> dict[str, Any]:
    """The live version of each workflow, planned as a run of it would be."""
    catalog = Catalog.from_manifests([n.manifest() for n in builtin_catalog().nodes()])
    return {
        wid: critic.context_of(parse_spec(text, f"{wid}.yaml"), catalog, LIVE)
        for wid, text in SPECS.items()
    }


def events(count: int, end: datetime) -> Iterator[list[dict[str, Any]]]:
    """`count` events in batches of `BATCH`, spread over the hour before `end`: one call
    (a step of a run, with its attempts) at a time, the workflows taking turns."""
    rng = random.Random(SEED)
    start = end - WINDOW
    spacing = WINDOW.total_seconds() * 1000 / count
    batch: list[dict[str, Any]] = []
    made = call = 0
    while made < count:
        workflow = ("orders", "orders", "mail", "report")[call % 4]
        steps = STEPS[workflow]
        step = steps[(call // 4) % len(steps)]
        at = start + timedelta(milliseconds=made * spacing)
        version = 1 if made < count // 3 else LIVE
        for row in _call(rng, call, workflow, step, version, at):
            batch.append(row)
            made += 1
            if len(batch) == BATCH:
                yield batch
                batch = []
        call += 1
    if batch:
        yield batch


def _call(
    rng: random.Random, i: int, workflow: str, step: str, version: int, at: datetime
) -> list[dict[str, Any]]:
    """The attempts of one call of `workflow.step`."""
    node = "core.transform" if step in ("price", "render", "total") else "http.request"
    node_version = "1.0.0" if (i // 120) % 5 == 0 else "1.1.0"  # not in step with latency
    replica = "nodes-core@a:1"
    max_attempts = 3 if (workflow, step, version) == ("orders", "fetch", LIVE) else 1
    rows = []
    for attempt in range(1, max_attempts + 1):
        if node == "http.request":  # a retry lands on another replica
            replica = REPLICAS[(i * 7 + attempt) % 3]
        status, latency, error_class, context = "ok", 5.0 + i % 40, None, {"region": "eu"}
        inputs = f"{i:064x}"
        if step == "fetch":
            latency = 80.0 + i % 120
            if rng.random() < (0.6 if replica == REPLICAS[2] else 0.15):
                status, error_class = "error", "HttpStatusError"
                context = {"status": "503", "retryable": "true", "region": "eu"}
        elif step == "price":
            latency, inputs = 40.0 + i % 7, f"{i % 50:064x}"
        elif step == "render":
            latency, inputs = 0.2, f"{i % 20:064x}"
        elif step == "total":
            latency = 0.5
        elif step == "query":
            latency = rng.uniform(2000, 9900)
            if rng.random() < 0.06:
                status, latency, error_class = "timeout", 10_000.0, "NodeTimeoutError"
                context = {"retryable": "true", "region": "eu"}
        elif step == "send" and rng.random() < 0.02:
            status, error_class = "error", "HttpStatusError"
            context = {"status": "400", "retryable": "false", "region": "eu"}
        begin = at + timedelta(milliseconds=attempt * 1200)
        rows.append(
            {
                "run_id": f"{workflow}-{i}", "step_id": step, "item": -1, "attempt": attempt,
                "node": node, "node_version": node_version, "status": status,
                "start": begin, "end": begin + timedelta(milliseconds=latency),
                "latency_ms": latency, "inputs_hash": inputs,
                "metrics": {"bytes": float(i % 5000)},
                "error": f"{error_class}: upstream said no" if error_class else None,
                "error_class": error_class, "retry_count": attempt - 1, "cache_hit": False,
                "cost_tokens": None, "context": context, "workflow_id": workflow,
                "workflow_version": version, "namespace": NAMESPACES[workflow],
                "replica": replica, "labels": {"tenant": f"t{i % 9}"},
            }
        )  # fmt: skip
        if status == "ok":
            break
    return rows


async def measure(count: int, say: Any = print) -> tuple[dict[str, list[float]], Any]:
    """Times in ms over `count` events of the full scan ("scan"), the scan without
    contrasts ("bare") and the plain aggregate ("plain"), interleaved; and the last scan."""
    from reflection import open_warehouse  # the embedded engine, opened privately

    end = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="reflux-bench-critic-") as home:
        with open_warehouse(Settings(home=Path(home))) as warehouse:
            warehouse.migrate()
            say(f"writing {count:,} events …")
            for batch in events(count, end):
                warehouse.insert(batch)

            async def ask(sql: str, params: Any) -> Any:
                return await asyncio.to_thread(warehouse.query, sql, params)

            async def plain() -> None:
                await ask(PLAIN_SQL, {})

            workflows = contexts()
            bare = critic.CriticSettings(max_contrasts=0)
            found = None

            async def full() -> None:
                nonlocal found
                found = await critic.scan(critic.Window(ask, end - WINDOW, end, workflows))

            async def without() -> None:
                await critic.scan(critic.Window(ask, end - WINDOW, end, workflows, bare))

            runs = {"scan": full, "bare": without, "plain": plain}
            times: dict[str, list[float]] = {name: [] for name in runs}
            for repeat in range(REPEATS + 1):  # the first is the warm-up
                for name, call in runs.items():
                    started = time.perf_counter()
                    await call()
                    if repeat:
                        times[name].append(ms(time.perf_counter() - started))
    return times, found


async def run(bench: BenchOptions, events: int | None = None) -> list[Figure]:
    """The figures; `events` overrides the count (a test's smoke run)."""
    count = events or (QUICK_EVENTS if bench.quick else EVENTS)
    times, found = await measure(count, bench.say)
    if found.errors:
        raise RuntimeError(f"the scan reported errors: {'; '.join(found.errors)}")
    bench.say(
        "findings: " + ", ".join(f"{f.kind} {f.workflow_id}.{f.step_id}" for f in found.findings)
    )
    scan_ms, bare_ms, plain_ms = (statistics.median(times[k]) for k in ("scan", "bare", "plain"))
    return [
        Figure(
            NAME, f"scan of {count:,} events, every detector", scan_ms, "ms",
            p95=max(times["scan"]), baseline=plain_ms, baseline_p95=max(times["plain"]),
            baseline_name=PLAIN, goal=SCAN_GOAL_MS,
        ),
        Figure(NAME, "scan time / plain aggregate time", scan_ms / plain_ms, "x", goal=RATIO_GOAL),
        Figure(
            NAME, "the same scan without contrasts", bare_ms, "ms", p95=max(times["bare"]),
            baseline=plain_ms, baseline_name=PLAIN,
        ),
        Figure(NAME, "scan without contrasts / plain aggregate", bare_ms / plain_ms, "x"),
    ]  # fmt: skip
