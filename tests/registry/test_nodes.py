"""The node registry on a real PostgreSQL: registration, the lifecycle, rollouts, the catalog
snapshot, search and history, including concurrent changes from several connections."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from infra.errors import (
    LifecycleError,
    ManifestConflictError,
    NotFoundError,
    PinError,
    RegistryError,
)
from nodes import NodeContext, NodeGroup
from registry.nodes import Change, NodeRegistry
from registry.versions import Rollout
from tests.helpers.waiting import eventually_async

pytestmark = pytest.mark.timeout(60)


# -- manifests ----------------------------------------------------------------------------


class RequestParams(BaseModel):
    url: str
    method: str = "GET"


class RequestOutput(BaseModel):
    status: int
    body: str


class RequestParamsV2(BaseModel):
    url: str
    method: str = "GET"
    headers: dict[str, str] = {}


demo = NodeGroup("demo")


@demo.node(
    "http.request",
    "1.0.0",
    params=RequestParams,
    output=RequestOutput,
    description="Make an HTTP request",
    tags=["http", "web"],
)
async def request_v1(params: RequestParams, ctx: NodeContext) -> RequestOutput:
    return RequestOutput(status=200, body="")


@demo.node(
    "http.request",
    "1.1.0",
    params=RequestParamsV2,
    output=RequestOutput,
    description="Make an HTTP request, with headers",
    tags=["http", "web", "headers"],
)
async def request_v1_1(params: RequestParamsV2, ctx: NodeContext) -> RequestOutput:
    return RequestOutput(status=200, body="")


def manifest(
    name: str,
    version: str,
    description: str = "",
    tags: list[str] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest shaped like `NodeDefinition.manifest()`, for nodes the tests do not serve."""
    return {
        "name": name,
        "version": version,
        "description": description,
        "tags": tags or [],
        "params": params or {"type": "object", "properties": {}},
        "output": {"type": "object", "properties": {}},
    }


def request_manifests() -> list[dict[str, Any]]:
    return [node.manifest() for node in demo.nodes]


async def events(registry: NodeRegistry, name: str) -> list[tuple[Any, ...]]:
    node = await registry.show(name)
    return [(e.version, e.action, e.from_status, e.to_status, e.actor) for e in node.events]


async def status_of(registry: NodeRegistry, name: str, version: str) -> str:
    node = await registry.show(name)
    return next(v.status for v in node.versions if v.version == version)


def replay(node_events: list[Any], version: str) -> str | None:
    """The status a version ends in if its recorded events are applied in order; each event
    must start from the status the previous one left."""
    status: str | None = None
    for event in node_events:
        if event.version != version:
            continue
        if event.action != "registered":
            assert event.from_status == status, f"event {event} does not follow {status}"
        status = event.to_status
    return status


async def open_connections(pool: asyncpg.Pool, count: int) -> None:
    """Open `count` connections in the pool up front, so concurrent calls start together
    instead of one finishing while the next is still connecting."""
    held = [await pool.acquire() for _ in range(count)]
    for conn in held:
        await pool.release(conn)


@pytest.fixture
def registry(db: asyncpg.Pool) -> NodeRegistry:
    return NodeRegistry(db, "alice")


# -- registration -------------------------------------------------------------------------


async def test_register_records_versions_with_status_and_event(registry: NodeRegistry) -> None:
    done = await registry.register(
        request_manifests(), artifact_uri="file:///artifacts/http.whl", changelog="first cut"
    )

    assert [(r.name, r.version, r.status, r.new) for r in done] == [
        ("http.request", "1.0.0", "draft", True),
        ("http.request", "1.1.0", "draft", True),
    ]
    node = await registry.show("http.request")
    assert [(v.version, v.status) for v in node.versions] == [
        ("1.0.0", "draft"),
        ("1.1.0", "draft"),
    ]
    v1 = node.versions[0]
    assert v1.manifest == demo.nodes[0].manifest()
    assert v1.artifact_uri == "file:///artifacts/http.whl"
    assert v1.changelog == "first cut"
    assert v1.created_by == v1.updated_by == "alice"
    assert await events(registry, "http.request") == [
        ("1.0.0", "registered", None, "draft", "alice"),
        ("1.1.0", "registered", None, "draft", "alice"),
    ]

    released = await registry.register([manifest("core.transform", "1.0.0")], status="production")
    assert [(r.status, r.new) for r in released] == [("production", True)]
    assert await events(registry, "core.transform") == [
        ("1.0.0", "registered", None, "production", "alice"),
    ]


async def test_registering_again_changes_nothing(db: asyncpg.Pool) -> None:
    alice, bob = NodeRegistry(db, "alice"), NodeRegistry(db, "bob")
    await alice.register(request_manifests())
    await alice.promote("http.request", "1.0.0", "staging")
    before = await alice.show("http.request")

    again = await bob.register(request_manifests(), status="production")

    assert [(r.version, r.status, r.new) for r in again] == [
        ("1.0.0", "staging", False),  # promoted since: keeps its status
        ("1.1.0", "draft", False),
    ]
    after = await alice.show("http.request")
    assert after.versions == before.versions
    assert after.events == before.events
    assert all(v.created_by == "alice" for v in after.versions)


async def test_changed_manifest_under_a_registered_version_is_refused(
    registry: NodeRegistry,
) -> None:
    await registry.register(request_manifests())
    changed = demo.nodes[0].manifest()
    changed["params"] = RequestParamsV2.model_json_schema()  # same version, new params

    with pytest.raises(ManifestConflictError) as caught:
        await NodeRegistry(registry.pool, "bob").register(
            [manifest("mail.send", "1.0.0", "Send an email"), changed]
        )

    message = str(caught.value)
    assert "http.request@1.0.0 is already registered with a different manifest" in message
    assert "by alice" in message
    assert "a changed node needs a new version" in message
    # one transaction: the new node earlier in the batch was not registered either
    with pytest.raises(NotFoundError):
        await registry.show("mail.send")
    assert [n.name for n in await registry.nodes()] == ["http.request"]
    node = await registry.show("http.request")
    assert node.versions[0].manifest == demo.nodes[0].manifest()
    assert len(node.events) == 2


async def test_description_and_tags_follow_the_newest_version(registry: NodeRegistry) -> None:
    # registered newest first in one batch: the older one must not take over
    await registry.register(list(reversed(request_manifests())))
    node = await registry.show("http.request")
    assert (node.description, node.tags) == (
        "Make an HTTP request, with headers",
        ["http", "web", "headers"],
    )

    await registry.register(
        [manifest("http.request", "2.0.0", "Call any HTTP API", ["http", "api"])]
    )
    node = await registry.show("http.request")
    assert (node.description, node.tags) == ("Call any HTTP API", ["http", "api"])

    await registry.register([manifest("http.request", "1.2.0", "A late patch for 1.x", ["legacy"])])
    node = await registry.show("http.request")
    assert (node.description, node.tags) == ("Call any HTTP API", ["http", "api"])
    # search reads the newest version's words too
    assert [hit.name for hit in await registry.search("api")] == ["http.request"]
    assert await registry.search("legacy") == []


# -- lifecycle ----------------------------------------------------------------------------


async def test_lifecycle_moves_one_step_at_a_time(registry: NodeRegistry) -> None:
    await registry.register(request_manifests())
    bob = NodeRegistry(registry.pool, "bob")

    assert await bob.promote("http.request", "1.0.0", "staging", note="looks fine") == Change(
        "http.request", "1.0.0", "draft", "staging"
    )
    await bob.promote("http.request", "1.0.0", "production")
    change = await bob.deprecate("http.request", "1.0.0", note="use 1.1")
    assert (change.before, change.after, change.changed) == ("production", "deprecated", True)

    node = await registry.show("http.request")
    v1 = node.versions[0]
    assert (v1.status, v1.created_by, v1.updated_by) == ("deprecated", "alice", "bob")
    assert await events(registry, "http.request") == [
        ("1.0.0", "registered", None, "draft", "alice"),
        ("1.1.0", "registered", None, "draft", "alice"),
        ("1.0.0", "promoted", "draft", "staging", "bob"),
        ("1.0.0", "promoted", "staging", "production", "bob"),
        ("1.0.0", "deprecated", "production", "deprecated", "bob"),
    ]
    assert node.events[2].detail == {"note": "looks fine"}
    assert node.events[4].detail == {"note": "use 1.1"}


@pytest.mark.parametrize(
    ("start", "to", "fragment"),
    [
        ([], "production", "it is draft: promote it to staging first"),
        (["staging", "production"], "staging", "it is production; versions never move back"),
        (["staging"], "draft", "it is staging; versions never move back to draft"),
        (["deprecated"], "production", "bring it back to production with --force"),
        (["deprecated"], "staging", "it is deprecated; versions never move back to staging"),
    ],
)
async def test_lifecycle_refusals_name_the_version(
    registry: NodeRegistry, start: list[str], to: str, fragment: str
) -> None:
    await registry.register(request_manifests())
    for status in start:
        await registry.promote("http.request", "1.0.0", status)  # type: ignore[arg-type]
    before = await registry.show("http.request")

    with pytest.raises(LifecycleError) as caught:
        await registry.promote("http.request", "1.0.0", to)  # type: ignore[arg-type]

    assert str(caught.value).startswith(f"cannot move http.request@1.0.0 to {to}: ")
    assert fragment in str(caught.value)
    after = await registry.show("http.request")
    assert (after.versions, after.events) == (before.versions, before.events)


async def test_a_deprecated_version_comes_back_only_with_force(registry: NodeRegistry) -> None:
    await registry.register(request_manifests(), status="production")
    await registry.deprecate("http.request", "1.0.0")

    change = await registry.promote(
        "http.request", "1.0.0", "production", force=True, note="1.1 broke billing"
    )

    assert (change.before, change.after) == ("deprecated", "production")
    last = (await registry.show("http.request")).events[-1]
    assert (last.action, last.from_status, last.to_status) == (
        "promoted",
        "deprecated",
        "production",
    )
    assert last.detail == {"note": "1.1 broke billing", "forced": True}


async def test_promoting_to_the_current_status_records_nothing(registry: NodeRegistry) -> None:
    await registry.register(request_manifests())
    await registry.promote("http.request", "1.0.0", "staging")
    before = await registry.show("http.request")

    change = await NodeRegistry(registry.pool, "bob").promote("http.request", "1.0.0", "staging")
    again = await registry.promote("http.request", "1.1.0", "draft")

    assert (change.before, change.after, change.changed) == ("staging", "staging", False)
    assert not again.changed
    after = await registry.show("http.request")
    assert (after.versions, after.events) == (before.versions, before.events)


async def test_unknown_node_or_version_suggests_the_right_one(registry: NodeRegistry) -> None:
    await registry.register(request_manifests())
    await registry.register([manifest("core.transform", "1.0.0")])

    for attempt in (
        registry.promote("http.reqest", "1.0.0", "staging"),
        registry.deprecate("http.reqest", "1.0.0"),
        registry.rollout("http.reqest", "1.0.0", 10),
        registry.show("http.reqest"),
    ):
        with pytest.raises(NotFoundError) as caught:
            await attempt
        assert str(caught.value) == "unknown node 'http.reqest'; did you mean 'http.request'?"

    with pytest.raises(NotFoundError) as caught:
        await registry.promote("http.request", "1.0.1", "staging")
    assert str(caught.value) == (
        "http.request has no version 1.0.1 (known: 1.0.0, 1.1.0); did you mean '1.0.0'?"
    )
    with pytest.raises(NotFoundError, match=r"known: 1\.0\.0, 1\.1\.0"):
        await registry.rollout("http.request", "7.0.0", 10)
    with pytest.raises(NotFoundError, match="unknown node 'nothing.like.it'$"):
        await registry.show("nothing.like.it")


# -- concurrency --------------------------------------------------------------------------


async def test_concurrent_promotions_apply_once(db: asyncpg.Pool) -> None:
    await NodeRegistry(db, "alice").register(request_manifests())
    actors = [NodeRegistry(db, f"user{i}") for i in range(10)]
    await open_connections(db, len(actors))

    changes = await asyncio.gather(
        *(actor.promote("http.request", "1.0.0", "staging") for actor in actors)
    )

    assert all(c.after == "staging" for c in changes)
    winners = [i for i, c in enumerate(changes) if c.changed]
    assert len(winners) == 1
    assert changes[winners[0]].before == "draft"
    node = await actors[0].show("http.request")
    promoted = [e for e in node.events if e.action == "promoted"]
    assert [(e.from_status, e.to_status, e.actor) for e in promoted] == [
        ("draft", "staging", f"user{winners[0]}")
    ]
    assert node.versions[0].updated_by == f"user{winners[0]}"


async def test_racing_promotion_and_deprecation_match_the_events(db: asyncpg.Pool) -> None:
    registry = NodeRegistry(db, "alice")
    versions = [f"1.{minor}.0" for minor in range(8)]
    await registry.register([manifest("http.request", v) for v in versions], status="staging")
    promoter, deprecator = NodeRegistry(db, "promoter"), NodeRegistry(db, "deprecator")
    await open_connections(db, 10)

    outcomes = await asyncio.gather(
        *(
            task
            for v in versions
            for task in (
                promoter.promote("http.request", v, "production"),
                deprecator.deprecate("http.request", v),
            )
        ),
        return_exceptions=True,
    )

    node = await registry.show("http.request")
    final = {v.version: v.status for v in node.versions}
    for v, promoted, deprecated in zip(versions, outcomes[::2], outcomes[1::2], strict=True):
        assert isinstance(deprecated, Change), deprecated
        if isinstance(promoted, Change):  # promotion first, then deprecation
            assert (promoted.before, promoted.after) == ("staging", "production")
            assert (deprecated.before, deprecated.after) == ("production", "deprecated")
        else:  # deprecation first: the promotion found it deprecated
            assert isinstance(promoted, LifecycleError), promoted
            assert f"http.request@{v}" in str(promoted)
            assert (deprecated.before, deprecated.after) == ("staging", "deprecated")
        assert final[v] == "deprecated"
        assert replay(node.events, v) == final[v]
        changes = [e for e in node.events if e.version == v and e.action != "registered"]
        assert len(changes) == (2 if isinstance(promoted, Change) else 1)


async def test_concurrent_registrations_register_once(db: asyncpg.Pool) -> None:
    services = [NodeRegistry(db, f"replica{i}") for i in range(6)]
    await open_connections(db, len(services))

    done = await asyncio.gather(*(s.register(request_manifests()) for s in services))

    for index in range(2):
        assert sum(batch[index].new for batch in done) == 1
    node = await services[0].show("http.request")
    assert [(e.version, e.action) for e in node.events] == [
        ("1.0.0", "registered"),
        ("1.1.0", "registered"),
    ]


async def test_batches_in_different_orders_do_not_deadlock(db: asyncpg.Pool) -> None:
    # two deploys of a service starting together, declaring the same nodes in other orders
    batch = [manifest(f"svc.node{i:02d}", "1.0.0") for i in range(20)]
    old, new = NodeRegistry(db, "old-deploy"), NodeRegistry(db, "new-deploy")
    await open_connections(db, 2)

    done = await asyncio.gather(old.register(batch), new.register(batch[::-1]))

    assert [r.name for r in done[0]] == [m["name"] for m in batch]  # results in batch order
    assert [r.name for r in done[1]] == [m["name"] for m in batch[::-1]]
    registered = sorted(r.name for results in done for r in results if r.new)
    assert registered == sorted(m["name"] for m in batch)


async def test_an_older_version_registered_concurrently_does_not_take_the_description(
    db: asyncpg.Pool,
) -> None:
    """A newer and an older version of one node registered at the same moment: whichever
    finishes last, the node keeps the newest version's description.

    A transaction holding the node's row lock (as `rollout` does) lines the two up; once it
    ends they run side by side. Which one writes first is up to the server, so a few rounds."""
    registry = NodeRegistry(db, "alice")
    names = [f"race.node{i}" for i in range(12)]
    await registry.register([manifest(name, "1.0.0", "first", ["v1"]) for name in names])
    newer, older = NodeRegistry(db, "new-deploy"), NodeRegistry(db, "old-deploy")

    for name in names:
        async with db.acquire() as blocker, blocker.transaction():
            await blocker.execute("SELECT FROM nodes WHERE name = $1 FOR UPDATE", name)
            registering = [
                asyncio.create_task(newer.register([manifest(name, "2.0.0", "newest", ["v2"])])),
                asyncio.create_task(older.register([manifest(name, "1.5.0", "older", ["v1"])])),
            ]
            await waiting_for_locks(db, 2)
        await asyncio.gather(*registering)

    for node in await registry.nodes():
        assert [v.version for v in node.versions] == ["1.0.0", "1.5.0", "2.0.0"]
        assert (node.name, node.description, node.tags) == (node.name, "newest", ["v2"])


async def waiting_for_locks(pool: asyncpg.Pool, count: int, timeout: float = 10.0) -> None:
    """Return once `count` sessions on this database wait for a lock."""

    async def enough() -> bool:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        assert waiting >= count, f"{waiting} sessions wait for a lock, not {count}"
        return True

    await eventually_async(enough, timeout=timeout, every=0.02)


# -- rollouts -----------------------------------------------------------------------------


async def test_rollouts(registry: NodeRegistry) -> None:
    await registry.register(
        [manifest("http.request", v) for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0")]
    )
    await registry.promote("http.request", "1.0.0", "staging")
    await registry.promote("http.request", "1.0.0", "production")
    await registry.promote("http.request", "1.1.0", "staging")
    await registry.promote("http.request", "1.2.0", "staging")

    with pytest.raises(LifecycleError, match=r"cannot roll out http.request@1.3.0: it is draft"):
        await registry.rollout("http.request", "1.3.0", 10)
    for percent in (-1, 101):
        with pytest.raises(RegistryError, match=f"between 0 and 100, got {percent}"):
            await registry.rollout("http.request", "1.1.0", percent)
    assert (await registry.catalog()).rollouts == {}

    assert await registry.rollout("http.request", "1.1.0", 10) is None
    assert (await registry.catalog()).rollouts == {"http.request": Rollout("1.1.0", 10)}
    assert (await registry.show("http.request")).rollout == Rollout("1.1.0", 10)

    previous = await registry.rollout("http.request", "1.2.0", 25)
    assert previous == Rollout("1.1.0", 10)
    assert (await registry.catalog()).rollouts == {"http.request": Rollout("1.2.0", 25)}

    with pytest.raises(RegistryError) as caught:
        await registry.rollout("http.request", "1.1.0", 0)
    assert str(caught.value) == (
        "no rollout of http.request@1.1.0 to stop (http.request@1.2.0 is at 25%)"
    )
    assert await registry.rollout("http.request", "1.2.0", 0) == Rollout("1.2.0", 25)
    assert (await registry.catalog()).rollouts == {}
    with pytest.raises(RegistryError, match=r"to stop \(http.request has none\)"):
        await registry.rollout("http.request", "1.2.0", 0)

    # a production version may take a share too
    assert await registry.rollout("http.request", "1.0.0", 100) is None

    node = await registry.show("http.request")
    rollouts = [(e.version, e.from_status, e.detail) for e in node.events if e.action == "rollout"]
    assert rollouts == [
        ("1.1.0", "staging", {"percent": 10}),
        ("1.2.0", "staging", {"percent": 25, "previous": {"version": "1.1.0", "percent": 10}}),
        ("1.2.0", "staging", {"percent": 0, "previous": {"version": "1.2.0", "percent": 25}}),
        ("1.0.0", "production", {"percent": 100}),
    ]


async def test_deprecating_the_rolled_out_version_stops_the_rollout(
    registry: NodeRegistry,
) -> None:
    await registry.register([manifest("http.request", v) for v in ("1.0.0", "1.1.0")])
    await registry.promote("http.request", "1.0.0", "staging")
    await registry.promote("http.request", "1.1.0", "staging")
    await registry.rollout("http.request", "1.1.0", 30)

    await registry.deprecate("http.request", "1.0.0")  # not the rolled-out one
    assert (await registry.catalog()).rollouts == {"http.request": Rollout("1.1.0", 30)}

    await registry.deprecate("http.request", "1.1.0", note="leaks sockets")

    assert (await registry.catalog()).rollouts == {}
    node = await registry.show("http.request")
    assert node.rollout is None
    assert node.events[-1].action == "deprecated"
    assert node.events[-1].detail == {"note": "leaks sockets", "rollout_stopped_at": 30}
    with pytest.raises(LifecycleError, match="it is deprecated"):
        await registry.rollout("http.request", "1.1.0", 30)


# -- catalog ------------------------------------------------------------------------------


async def test_catalog_reflects_the_registry_and_resolves_pins(registry: NodeRegistry) -> None:
    await registry.register(
        [manifest("http.request", v) for v in ("1.0.0", "1.1.0", "1.2.0")], status="production"
    )
    await registry.register(
        [manifest("http.request", "1.3.0"), manifest("http.request", "2.0.0")], status="staging"
    )
    await registry.register([manifest("core.transform", "1.0.0")])
    await registry.deprecate("http.request", "1.0.0")
    await registry.rollout("http.request", "1.3.0", 100)

    catalog = await registry.catalog()

    statuses = {
        name: sorted((v.version, v.status) for v in infos)
        for name, infos in catalog.versions.items()
    }
    assert statuses == {
        "http.request": [
            ("1.0.0", "deprecated"),
            ("1.1.0", "production"),
            ("1.2.0", "production"),
            ("1.3.0", "staging"),
            ("2.0.0", "staging"),
        ],
        "core.transform": [("1.0.0", "draft")],
    }
    assert catalog.rollouts == {"http.request": Rollout("1.3.0", 100)}

    assert catalog.resolve("http.request", "1") == "1.2.0"
    assert catalog.resolve("http.request", None) == "1.2.0"
    assert catalog.resolve("http.request", "1", run_id="run-1") == "1.3.0"  # rolled out to all
    assert catalog.resolve("http.request", "2.0.0") == "2.0.0"  # staging, by exact pin
    assert catalog.resolve("core.transform", "1.0.0") == "1.0.0"  # draft, by exact pin
    with pytest.raises(PinError, match=r"1\.0\.0 is deprecated; use http.request@1\.2\.0"):
        catalog.resolve("http.request", "1.0.0")
    with pytest.raises(PinError, match="no production version"):
        catalog.resolve("http.request", "2", run_id="run-1")  # the rollout does not match 2
    with pytest.raises(NotFoundError, match="did you mean 'http.request'"):
        catalog.resolve("http.reqest", "1")

    await registry.promote("http.request", "2.0.0", "production")
    assert catalog.resolve("http.request", None) == "1.2.0"  # a snapshot: unchanged
    assert (await registry.catalog()).resolve("http.request", None) == "2.0.0"


# -- search and history -------------------------------------------------------------------


async def test_search(registry: NodeRegistry) -> None:
    await registry.register(
        [
            manifest("http.request", "1.0.0", "Make an HTTP request", ["http", "web"]),
            manifest("core.transform", "1.0.0", "Reshape data with a template"),
            manifest("mail.send", "1.0.0", "Send an email", ["smtp"]),
            manifest("web.hook", "1.0.0", "Wait for a call to an https endpoint", ["web"]),
        ]
    )

    hits = await registry.search("http")
    assert [h.name for h in hits] == ["http.request", "web.hook"]
    assert hits[0].score > hits[1].score
    assert (hits[0].description, hits[0].tags) == ("Make an HTTP request", ["http", "web"])
    assert [h.name for h in await registry.search("HTTP")] == ["http.request", "web.hook"]
    assert [h.name for h in await registry.search("transfrom")] == ["core.transform"]
    assert [h.name for h in await registry.search("ansfor")] == ["core.transform"]  # mid-word
    assert [h.name for h in await registry.search("smtp")] == ["mail.send"]
    assert [h.name for h in await registry.search("email")] == ["mail.send"]
    assert [h.name for h in await registry.search("mail.send")][0] == "mail.send"
    assert await registry.search("zqxjvk") == []
    assert len(await registry.search("web", limit=1)) == 1


async def test_show_orders_versions_by_semver_and_events_by_time(db: asyncpg.Pool) -> None:
    alice, bob, carol = (NodeRegistry(db, who) for who in ("alice", "bob", "carol"))
    await alice.register(
        [manifest("http.request", v) for v in ("1.9.0", "1.10.0", "1.2.0", "2.0.0", "1.9.1")]
    )
    await bob.promote("http.request", "1.10.0", "staging")
    await carol.rollout("http.request", "1.10.0", 5)
    await bob.deprecate("http.request", "1.9.0")

    node = await carol.show("http.request")

    assert [v.version for v in node.versions] == ["1.2.0", "1.9.0", "1.9.1", "1.10.0", "2.0.0"]
    assert [(e.version, e.action, e.actor) for e in node.events] == [
        ("1.9.0", "registered", "alice"),
        ("1.10.0", "registered", "alice"),
        ("1.2.0", "registered", "alice"),
        ("2.0.0", "registered", "alice"),
        ("1.9.1", "registered", "alice"),
        ("1.10.0", "promoted", "bob"),
        ("1.10.0", "rollout", "carol"),
        ("1.9.0", "deprecated", "bob"),
    ]
    assert [e.at for e in node.events] == sorted(e.at for e in node.events)
    assert node.rollout == Rollout("1.10.0", 5)
    listed = await carol.nodes()
    assert [n.name for n in listed] == ["http.request"]
    assert [v.version for v in listed[0].versions] == [v.version for v in node.versions]
    assert listed[0].rollout == node.rollout
