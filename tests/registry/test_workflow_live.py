"""The live pointer of workflows, candidate versions and rollouts, on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.errors import LifecycleError, NotFoundError, RegistryError
from orchestrator.validate import parse_spec
from registry.workflows import Push, WorkflowRegistry

pytestmark = pytest.mark.timeout(60)

FLOW = """\
id: order-sync
namespace: shop
description: {description}
steps:
  - id: fetch
    node: http.request@1
    with:
      url: https://shop.example/orders?page={page}
"""


def source(page: int, description: str = "Copy new orders.") -> str:
    return FLOW.format(page=page, description=description)


async def push(registry: WorkflowRegistry, text: str, candidate: bool = False) -> Push:
    return await registry.push(parse_spec(text, "order-sync.yaml").definition(text), candidate)


@pytest.fixture
def registry(db: asyncpg.Pool) -> WorkflowRegistry:
    return WorkflowRegistry(db, "ana")


def states(versions) -> list[tuple[int, bool, bool]]:
    return [(v.version, v.live, v.candidate) for v in versions]


async def test_a_normal_push_is_live_and_a_candidate_keeps_live(registry: WorkflowRegistry):
    first = await push(registry, source(1))
    assert (first.created, first.went_live, first.version.live) == (True, True, True)

    cand = await push(registry, source(2, "Copy orders, paged."), candidate=True)
    assert (cand.created, cand.went_live) == (True, False)
    assert (cand.version.version, cand.version.live, cand.version.candidate) == (2, False, True)

    assert (await registry.live("order-sync")).version == 1
    assert (await registry.get("order-sync")).source == source(1)  # None: the live version
    assert (await registry.get("order-sync", 2)).candidate
    assert states(await registry.versions("order-sync")) == [(1, True, False), (2, False, True)]
    [listed] = await registry.workflows()
    assert (listed.latest_version, listed.live_version) == (2, 1)
    assert listed.description == "Copy new orders."  # the live version's
    assert await registry.choose("order-sync", "run-1") == (1, {})


async def test_a_first_version_cannot_be_a_candidate(registry: WorkflowRegistry):
    with pytest.raises(RegistryError, match="push its first version without candidate"):
        await push(registry, source(1), candidate=True)
    assert await registry.workflows() == []
    assert (await push(registry, source(1))).version.live


async def test_pushing_what_is_stored_makes_no_version(registry: WorkflowRegistry):
    await push(registry, source(1))
    await push(registry, source(2), candidate=True)
    again = await push(registry, source(2), candidate=True)
    assert (again.created, again.went_live, again.version.version) == (False, False, 2)
    live_again = await push(registry, source(1), candidate=True)  # the live content
    assert (live_again.created, live_again.version.version) == (False, 1)
    assert (await push(registry, source(1))).created is False

    # a normal push of the candidate's content makes that candidate live, stores nothing new
    made_live = await push(registry, source(2))
    assert (made_live.created, made_live.went_live) == (False, True)
    assert (made_live.version.version, made_live.version.live) == (2, True)
    assert states(await registry.versions("order-sync")) == [(1, False, False), (2, True, False)]


async def test_promote_moves_live_and_any_version_may_come_back(registry: WorkflowRegistry):
    await push(registry, source(1))
    await push(registry, source(2, "Paged."), candidate=True)

    promoted = await registry.promote("order-sync", 2)
    assert (promoted.version, promoted.previous, promoted.changed) == (2, 1, True)
    assert (await registry.live("order-sync")).version == 2
    assert states(await registry.versions("order-sync")) == [(1, False, False), (2, True, False)]
    assert (await registry.workflows())[0].description == "Paged."

    assert not (await registry.promote("order-sync", 2)).changed  # already live: nothing
    back = await registry.promote("order-sync", 1)  # a rollback
    assert (back.version, back.previous) == (1, 2)
    assert await registry.choose("order-sync", "run-1") == (1, {})

    with pytest.raises(NotFoundError, match=r"has no version 9 \(versions 1 to 2\)"):
        await registry.promote("order-sync", 9)
    with pytest.raises(NotFoundError, match=r"did you mean 'order-sync'"):
        await registry.promote("order-synk", 1)


async def test_a_rollout_takes_its_share_of_run_ids(registry: WorkflowRegistry):
    await push(registry, source(1))
    await push(registry, source(2), candidate=True)
    assert await registry.rollout("order-sync") is None
    assert await registry.set_rollout("order-sync", 2, 10) is None
    rollout = await registry.rollout("order-sync")
    assert (rollout.version, rollout.percent, rollout.updated_by) == (2, 10, "ana")

    chosen = [await registry.choose("order-sync", f"order-sync-{n}") for n in range(1000)]
    to_candidate = [c for c in chosen if c[0] == 2]
    assert 50 <= len(to_candidate) <= 150, len(to_candidate)  # 10 % +- 5 %
    assert all(labels == {"rollout": "order-sync@2"} for _, labels in to_candidate)
    assert all(c == (1, {}) for c in chosen if c[0] == 1)
    # deterministic: the same run id, the same answer
    assert [await registry.choose("order-sync", f"order-sync-{n}") for n in range(1000)] == chosen

    # a larger share keeps the runs it had and takes more
    await registry.set_rollout("order-sync", 2, 50)
    wider = [await registry.choose("order-sync", f"order-sync-{n}") for n in range(1000)]
    assert all(w[0] == 2 for w, c in zip(wider, chosen, strict=True) if c[0] == 2)
    assert 450 <= sum(w[0] == 2 for w in wider) <= 550

    previous = await registry.set_rollout("order-sync", 2, 0)
    assert (previous.version, previous.percent) == (2, 50)
    assert await registry.rollout("order-sync") is None
    after = [await registry.choose("order-sync", f"order-sync-{n}") for n in range(200)]
    assert after == [(1, {})] * 200


async def test_rollouts_refuse_what_cannot_be(registry: WorkflowRegistry):
    await push(registry, source(1))
    await push(registry, source(2), candidate=True)
    with pytest.raises(LifecycleError, match=r"cannot roll out order-sync@1: it is live"):
        await registry.set_rollout("order-sync", 1, 10)
    with pytest.raises(NotFoundError, match=r"has no version 3 \(versions 1 to 2\)"):
        await registry.set_rollout("order-sync", 3, 10)
    for percent in (-1, 101):
        with pytest.raises(RegistryError, match="between 0 and 100, got"):
            await registry.set_rollout("order-sync", 2, percent)
    with pytest.raises(LifecycleError, match=r"no rollout of order-sync@2 to end \(none is on\)"):
        await registry.set_rollout("order-sync", 2, 0)
    with pytest.raises(NotFoundError, match="unknown workflow 'nope'"):
        await registry.set_rollout("nope", 1, 10)
    with pytest.raises(NotFoundError, match="unknown workflow 'nope'"):
        await registry.rollout("nope")
    with pytest.raises(NotFoundError, match="unknown workflow 'nope'"):
        await registry.choose("nope", "run-1")


async def test_promoting_the_rolled_out_version_ends_its_rollout(registry: WorkflowRegistry):
    await push(registry, source(1))
    await push(registry, source(2), candidate=True)
    await registry.set_rollout("order-sync", 2, 30)
    promoted = await registry.promote("order-sync", 2)
    assert promoted.rollout_ended == 30
    assert await registry.rollout("order-sync") is None
    assert await registry.choose("order-sync", "any") == (2, {})


async def test_a_rollout_of_an_older_version_is_a_canary_of_a_rollback(
    registry: WorkflowRegistry,
):
    await push(registry, source(1))
    await push(registry, source(2))
    await registry.set_rollout("order-sync", 1, 100)
    assert await registry.choose("order-sync", "r") == (1, {"rollout": "order-sync@1"})
    # another version's rollout replaces it
    await push(registry, source(3), candidate=True)
    previous = await registry.set_rollout("order-sync", 3, 100)
    assert (previous.version, previous.percent) == (1, 100)
    assert await registry.choose("order-sync", "r") == (3, {"rollout": "order-sync@3"})


async def test_every_change_is_recorded_with_who(db: asyncpg.Pool):
    ana, bo = WorkflowRegistry(db, "ana"), WorkflowRegistry(db, "bo")
    await push(ana, source(1))
    await push(bo, source(2), candidate=True)
    await bo.set_rollout("order-sync", 2, 10)
    await ana.set_rollout("order-sync", 2, 20)
    await ana.set_rollout("order-sync", 2, 0)
    await bo.set_rollout("order-sync", 2, 5)
    await ana.promote("order-sync", 2)
    await ana.promote("order-sync", 2)  # no change: not recorded
    events = await ana.events("order-sync")
    assert [(e.version, e.action, e.actor) for e in events] == [
        (1, "pushed", "ana"),
        (2, "pushed", "bo"),
        (2, "rollout_started", "bo"),
        (2, "rollout_changed", "ana"),
        (2, "rollout_ended", "ana"),
        (2, "rollout_started", "bo"),
        (2, "rollout_ended", "ana"),
        (2, "promoted", "ana"),
    ]
    assert events[1].detail == {"candidate": True, "live": 1}
    assert events[3].detail == {"percent": 20, "live": 1, "previous": {"version": 2, "percent": 10}}
    assert events[-1].detail == {"previous": 1, "rollout_ended": 5}
    assert all(e.at is not None for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_concurrent_promotions_and_rollouts_apply_one_by_one(registry: WorkflowRegistry):
    await push(registry, source(1))
    for page in range(2, 7):
        await push(registry, source(page), candidate=True)
    await asyncio.gather(
        *(registry.promote("order-sync", n) for n in range(2, 7)),
        *(registry.set_rollout("order-sync", 1, n) for n in range(1, 6)),
        return_exceptions=True,  # a rollout of 1 while it is live again is refused
    )
    promotions = [e for e in await registry.events("order-sync") if e.action == "promoted"]
    assert len(promotions) == 5
    # each promotion saw the one before it: a chain, never two from the same version
    chain = [e.detail["previous"] for e in promotions]
    assert chain[0] == 1 and len(set(chain)) == 5
    assert chain[1:] == [e.version for e in promotions[:-1]]
    assert (await registry.live("order-sync")).version == promotions[-1].version
    assert sum(v.live for v in await registry.versions("order-sync")) == 1


async def test_the_migration_makes_the_newest_version_live(empty_db: str):
    """A database with workflows from before 0006: the newest version of each becomes live,
    and its history starts with the versions already there."""
    from infra.database import connect
    from infra.migrations import load_migrations, migrate

    conn = await connect(empty_db)
    try:
        await migrate(conn, migrations=load_migrations()[:5])
        await conn.execute(
            "INSERT INTO workflows (id, description, latest_version, created_by)"
            " VALUES ('old', 'd', 2, 'ana')"
        )
        for version in (1, 2):
            await conn.execute(
                "INSERT INTO workflow_versions (workflow_id, version, source, spec, spec_hash,"
                " created_by) VALUES ('old', $1, 's', '{}', 'h', 'ana')",
                version,
            )
        await migrate(conn)
        assert await conn.fetchval("SELECT live_version FROM workflows WHERE id = 'old'") == 2
        pushed = await conn.fetch(
            "SELECT version, action, actor FROM workflow_events WHERE workflow_id = 'old'"
            " ORDER BY id"
        )
        assert [tuple(r) for r in pushed] == [(1, "pushed", "ana"), (2, "pushed", "ana")]
    finally:
        await conn.close()
