"""The Critic's window: which traces count, and the live versions it reads from the
registry. Also the helpers the other Critic tests build their traces and windows with
(a private embedded ClickHouse per test, known events written straight into it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from evolution.critic import CriticSettings, Window, WorkflowContext, build_window, context_of
from evolution.proposals.model import Query
from infra.settings import Settings
from nodes import builtin_catalog
from orchestrator import Spec, parse_spec
from reflection.events import TraceEvent
from reflection.warehouse import Warehouse, open_warehouse
from registry import Catalog, NodeRegistry, WorkflowRegistry

pytestmark = pytest.mark.timeout(60)

CATALOG = Catalog.from_manifests([n.manifest() for n in builtin_catalog().nodes()])
END = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
START = END - timedelta(hours=1)


def orders_source(
    retry: str = "{max_attempts: 1}", timeout: str = "10s", price_cache: str = ""
) -> str:
    cache = f"\n    cache: {price_cache}" if price_cache else ""
    return f"""\
id: orders
namespace: shop
steps:
  - id: fetch
    node: http.request@1
    retry: {retry}
    timeout: {timeout}
    with:
      url: https://shop.example/orders
  - id: price
    node: core.transform@1
    with:
      value: "{{{{ steps.fetch.output.body }}}}"{cache}
"""


def orders_spec(**options: str) -> Spec:
    return parse_spec(orders_source(**options), "orders.yaml")


def orders(**options: str) -> WorkflowContext:
    return context_of(orders_spec(**options), CATALOG, 3)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    with open_warehouse(Settings(home=tmp_path)) as opened:
        opened.migrate()
        yield opened


def ask_of(warehouse: Warehouse) -> Any:
    async def ask(sql: str, params: Mapping[str, Any]) -> Any:
        return await asyncio.to_thread(warehouse.query, sql, params)

    return ask


def window_of(
    warehouse: Warehouse,
    *contexts: WorkflowContext,
    settings: CriticSettings | None = None,
) -> Window:
    workflows = {c.workflow_id: c for c in contexts or (orders(),)}
    return Window(ask_of(warehouse), START, END, workflows, settings or CriticSettings())


def event(
    run: str,
    step: str = "fetch",
    attempt: int = 1,
    status: str = "ok",
    *,
    at: float = 0.0,
    latency_ms: float = 1000.0,
    node: str = "http.request",
    version: str = "1.1.0",
    workflow: str = "orders",
    namespace: str = "shop",
    workflow_version: int = 3,
    **fields: Any,
) -> TraceEvent:
    """One attempt `at` seconds after the window's start (of version 3 by default, the live
    one `orders()` has)."""
    start = START + timedelta(seconds=at)
    return TraceEvent(
        run_id=run,
        step_id=step,
        attempt=attempt,
        node=node,
        node_version=version,
        status=status,
        start=start,
        end=start + timedelta(milliseconds=latency_ms),
        latency_ms=latency_ms,
        retry_count=attempt - 1,
        workflow_id=workflow,
        workflow_version=workflow_version,
        namespace=namespace,
        **fields,
    )


def http_503(run: str, attempt: int = 1, *, at: float = 0.0, **fields: Any) -> TraceEvent:
    context = {"retryable": "true", "status": "503", **fields.pop("context", {})}
    return event(
        run, "fetch", attempt, "error", at=at, error_class="HttpStatusError",
        error="503 Service Unavailable", context=context, **fields,
    )  # fmt: skip


# ------------------------------------------------------------------------------- tests


async def test_the_window_counts_only_live_traffic_of_its_workflows(warehouse: Warehouse):
    warehouse.insert(
        [
            event("live-1", at=10),
            event("shadow-1", at=10, labels={"shadow": "true"}),
            event("variant-1", at=10, labels={"experiment": "prop-1", "arm": "candidate"}),
            event("other-ns", at=10, namespace="elsewhere"),
            event("other-wf", at=10, workflow="mail"),
            event("before", at=-60),
            event("labelled", at=20, labels={"team": "a"}),
        ]
    )
    window = window_of(warehouse)
    for runs, query in (await rolled_runs(window), await raw_runs(window)):
        assert runs == ["labelled", "live-1"]
        assert all(isinstance(v, str) for v in query.params.values())  # as `reflux sql --param`
        assert "'shadow'" not in query.sql and "prop-1" not in query.sql  # bound, not formatted


async def rolled_runs(window: Window, *args: str, **kwargs: bool) -> tuple[list[str], Query]:
    """The runs `window.live(*args, **kwargs)` keeps in the rollup the detectors read."""
    live = window.live(*args, **kwargs)
    [record], query = await window.run(
        f"SELECT arraySort(groupUniqArrayMerge(10)(runs)) AS runs FROM trace_minutes"
        f" WHERE {live.where}",
        live.params,
    )
    return record["runs"], query


async def raw_runs(window: Window, *args: str, **kwargs: bool) -> tuple[list[str], Query]:
    """The runs the same filter keeps in `traces` (`traces=True`)."""
    live = window.live(*args, traces=True, **kwargs)
    records, query = await window.run(
        f"SELECT run_id FROM traces WHERE {live.where} ORDER BY run_id", live.params
    )
    return [r["run_id"] for r in records], query


async def test_build_window_reads_live_versions_and_skips_what_no_longer_loads(
    warehouse: Warehouse, db: asyncpg.Pool
):
    await NodeRegistry(db, "test").register(
        [n.manifest() for n in builtin_catalog().nodes()], status="production"
    )
    source = orders_source(retry="{max_attempts: 4, initial_interval: 2s}")
    await WorkflowRegistry(db, "ana").push(parse_spec(source, "orders.yaml").definition(source))
    warehouse.insert(
        [
            event("r1", at=5),
            event("r2", "price", node="core.transform", at=6),
            event("g1", workflow="ghost", namespace="shop", at=7),  # never pushed
            event("s1", workflow="solo", namespace="shop", at=8, labels={"shadow": "true"}),
        ]
    )
    window = await build_window(db, ask_of(warehouse), since=timedelta(hours=2))
    assert list(window.workflows) == ["orders"]
    orders_ctx = window.workflows["orders"]
    assert (orders_ctx.namespace, orders_ctx.version) == ("shop", 1)
    fetch = orders_ctx.steps["fetch"]
    assert (fetch.node, fetch.version, fetch.timeout) == ("http.request", "1.1.0", 10.0)
    assert (fetch.retry.max_attempts, fetch.retry.initial_interval) == (4, 2.0)
    assert fetch.writes and not orders_ctx.steps["price"].writes
    assert orders_ctx.steps["price"].timeout == 5.0  # the node's declared limit

    scoped = await build_window(
        db, ask_of(warehouse), since=timedelta(hours=2), namespace="elsewhere"
    )
    assert scoped.workflows == {}


async def test_the_window_counts_only_the_live_version(warehouse: Warehouse):
    warehouse.insert(
        [event("v3", at=1), event("v2", at=2, workflow_version=2), event("v4", at=3,
         workflow_version=4)]
    )  # fmt: skip
    window = window_of(warehouse)
    for runs in (rolled_runs, raw_runs):
        for scope in ((), ("orders",), ("orders", "fetch")):
            assert (await runs(window, *scope))[0] == ["v3"]
        assert (await runs(window, all_versions=True))[0] == ["v2", "v3", "v4"]
    profile = await window.profile()
    assert [(k, s.attempts) for k, s in profile.steps.items()] == [(("orders", "fetch"), 1)]
    assert await window.profile() is profile  # computed once a scan
