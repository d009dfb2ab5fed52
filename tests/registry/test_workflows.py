"""Workflow versions and the run ledger on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.errors import NotFoundError, RegistryError
from orchestrator.validate import parse_spec
from registry.runs import get_run, record_end, record_start
from registry.workflows import Push, WorkflowRegistry, parse_ref, spec_hash

pytestmark = pytest.mark.timeout(60)

ORDER_SYNC = """\
id: order-sync
namespace: shop
description: Copy new orders to the warehouse.
steps:
  - id: fetch
    node: http.request@1
    with:
      url: https://shop.example/orders
  - id: shape
    node: core.transform@1
    with:
      value: "{{ steps.fetch.output.body }}"
"""

# The same spec: comments added, layout and quoting changed.
ORDER_SYNC_RESTYLED = """\
# Nightly copy of orders.
id: order-sync
namespace: shop
description: "Copy new orders to the warehouse."

steps:
  - {id: fetch, node: http.request@1, with: {url: "https://shop.example/orders"}}   # source
  - id: shape
    node: core.transform@1
    with:
        value: "{{ steps.fetch.output.body }}"
"""

ORDER_SYNC_V2 = ORDER_SYNC.replace("/orders", "/orders?status=new")


def _hash(source: str) -> str:
    return spec_hash(parse_spec(source).definition(source).spec)


async def push(registry: WorkflowRegistry, source: str, filename: str = "order-sync.yaml") -> Push:
    return await registry.push(parse_spec(source, filename).definition(source))


@pytest.fixture
def registry(db: asyncpg.Pool) -> WorkflowRegistry:
    return WorkflowRegistry(db, "ana")


async def test_versions_are_made_only_by_real_changes(registry: WorkflowRegistry):
    first = await push(registry, ORDER_SYNC)
    assert first.created
    assert first.version.ref == "order-sync@1"
    assert first.version.created_by == "ana"

    same = await push(registry, ORDER_SYNC)
    assert not same.created
    assert same.version == first.version

    assert _hash(ORDER_SYNC_RESTYLED) == _hash(ORDER_SYNC)
    restyled = await push(registry, ORDER_SYNC_RESTYLED)
    assert not restyled.created
    assert restyled.version.version == 1

    changed = await push(registry, ORDER_SYNC_V2)
    assert changed.created
    assert changed.version.version == 2

    assert [v.version for v in await registry.versions("order-sync")] == [1, 2]
    assert (await registry.get("order-sync")).source == ORDER_SYNC_V2
    assert (await registry.get("order-sync", 1)).source == ORDER_SYNC
    assert (await registry.get("order-sync", 2)).spec_hash == _hash(ORDER_SYNC_V2)

    diff = await registry.diff("order-sync", 1, 2)
    lines = diff.splitlines()
    assert lines[:2] == ["--- order-sync@1", "+++ order-sync@2"]
    assert "-      url: https://shop.example/orders" in lines
    assert "+      url: https://shop.example/orders?status=new" in lines
    assert await registry.diff("order-sync", 2, 2) == ""

    [listed] = await registry.workflows()
    assert (listed.id, listed.namespace, listed.latest_version) == ("order-sync", "shop", 2)
    assert listed.description == "Copy new orders to the warehouse."


async def test_going_back_to_older_content_is_a_new_version(registry: WorkflowRegistry):
    await push(registry, ORDER_SYNC)
    await push(registry, ORDER_SYNC_V2)
    back = await push(registry, ORDER_SYNC)
    assert back.created
    assert back.version.version == 3


async def test_list_holds_every_workflow_in_order(registry: WorkflowRegistry):
    assert await registry.workflows() == []
    await push(registry, ORDER_SYNC)
    await push(registry, ORDER_SYNC.replace("id: order-sync", "id: billing"), "billing.yaml")
    assert [w.id for w in await registry.workflows()] == ["billing", "order-sync"]


async def test_unknown_workflow_suggests_a_close_name(registry: WorkflowRegistry):
    await push(registry, ORDER_SYNC)
    for lookup in (
        lambda: registry.get("order-synk"),
        lambda: registry.get("order-synk", 1),
        lambda: registry.versions("order-synk"),
        lambda: registry.diff("order-synk", 1, 2),
    ):
        with pytest.raises(NotFoundError, match=r"did you mean 'order-sync'\?"):
            await lookup()
    with pytest.raises(NotFoundError, match=r"unknown workflow 'zzz'$"):
        await registry.get("zzz")


async def test_unknown_version_names_the_range(registry: WorkflowRegistry):
    await push(registry, ORDER_SYNC)
    await push(registry, ORDER_SYNC_V2)
    for version in (3, 0):
        with pytest.raises(NotFoundError, match=r"no version .*\(versions 1 to 2\)"):
            await registry.get("order-sync", version)
    with pytest.raises(NotFoundError, match=r"versions 1 to 2"):
        await registry.diff("order-sync", 1, 7)


async def test_concurrent_pushes_number_versions_without_gaps(registry: WorkflowRegistry):
    sources = [ORDER_SYNC.replace("/orders", f"/orders?page={n}") for n in range(10)]
    pushes = await asyncio.gather(*(push(registry, source) for source in sources))
    assert all(p.created for p in pushes)
    assert sorted(p.version.version for p in pushes) == list(range(1, 11))
    stored = await registry.versions("order-sync")
    assert [v.version for v in stored] == list(range(1, 11))
    assert sorted(v.source for v in stored) == sorted(sources)
    [listed] = await registry.workflows()
    assert listed.latest_version == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order-sync", ("order-sync", None)),
        ("order-sync@3", ("order-sync", 3)),
        (" review.routing@12 ", ("review.routing", 12)),
        ("a_b-9", ("a_b-9", None)),
    ],
)
def test_parse_ref(text, expected):
    assert parse_ref(text) == expected


@pytest.mark.parametrize("text", ["", "@3", "order-sync@", "order-sync@v2", "Order", "-x", "a@1@2"])
def test_parse_ref_refuses_bad_references(text):
    with pytest.raises(
        RegistryError, match="is not a workflow reference like my-flow or my-flow@3"
    ):
        parse_ref(text)


PINS = {
    "fetch": {"node": "http.request", "version": "1.2.5"},
    "shape": {"node": "core.transform", "version": "1.0.0"},
}


async def test_run_ledger_round_trips_a_run(db: asyncpg.Pool, registry: WorkflowRegistry):
    await push(registry, ORDER_SYNC)
    await record_start(db, "run-1", "order-sync", 1, PINS, "ana")

    started = await get_run(db, "run-1")
    assert (started.workflow_id, started.workflow_version) == ("order-sync", 1)
    assert started.pins == PINS
    assert (started.status, started.ended_at, started.error) == ("running", None, None)
    assert started.started_by == "ana"

    error = {"class": "HttpStatusError", "message": "503", "step": "fetch"}
    await record_end(db, "run-1", "failed", error)
    ended = await get_run(db, "run-1")
    assert (ended.status, ended.error) == ("failed", error)
    assert ended.ended_at is not None and ended.ended_at >= ended.started_at

    await record_end(db, "run-1", "completed")
    assert await get_run(db, "run-1") == ended


async def test_run_from_a_file_has_no_stored_version(db: asyncpg.Pool):
    await record_start(db, "run-2", "scratch", None, {}, "bo")
    await record_end(db, "run-2", "completed")
    run = await get_run(db, "run-2")
    assert (run.workflow_version, run.pins, run.status, run.error) == (None, {}, "completed", None)


async def test_unknown_run_is_not_found(db: asyncpg.Pool):
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        await get_run(db, "nope")
