"""The review loop end to end on real services: traces of a flaky endpoint → the Critic's
`retry` proposal → shadow validation against a fresh baseline → accept → a new live version
whose runs fail far less; a person's harmful proposal failing validation and refused at
accept; an A/A validation not failing; the watch reverting a change that turns bad.

The endpoint is a local HTTP server (the only thing outside the project); everything else is
the platform: Temporal, NATS, PostgreSQL, ClickHouse, the worker, node services, and an
evolution worker of this module's own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from evolution import ProposalStore, Request, ask, create, run_critic, wait_for
from infra import LifecycleError
from infra.database import create_pool, database_url
from infra.settings import Settings
from orchestrator import connect_temporal
from registry import WorkflowRegistry
from tests.evolution.loop import (
    EvolutionWorker,
    failure_rate,
    flow,
    push,
    run_many,
    traced,
    unique,
)
from tests.helpers.httpserver import HttpTestServer, RecordedRequest, Reply
from tests.helpers.stack import RunningStack

JUDGED = ("validated", "failed_validation", "inconclusive")
FLAKY_SHARE = 0.5


@pytest.fixture(scope="module")
def upstream() -> Iterator[HttpTestServer]:
    """`/flaky` answers 503 to half the calls (seeded), `/ok` always 200, `/broken` 500."""
    rng = random.Random(7)

    def flaky(_: RecordedRequest) -> Reply:
        if rng.random() < FLAKY_SHARE:
            return Reply(503, {"error": "busy"})
        return Reply(200, {"amount": 42})

    with HttpTestServer() as server:
        server.route("/flaky", flaky)
        server.route("/ok", lambda _: Reply(200, {"amount": 42}))
        server.route("/broken", lambda _: Reply(500, {"error": "broken"}))
        yield server


@pytest.fixture(scope="module")
def evolution(stack: RunningStack) -> Iterator[EvolutionWorker]:
    worker = EvolutionWorker(stack)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def loop(evolution: EvolutionWorker) -> AsyncIterator[tuple[Settings, object, asyncpg.Pool]]:
    settings = evolution.settings
    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), max_size=8)
    try:
        yield settings, client, pool
    finally:
        await pool.close()


def repoint(url: str) -> list[dict[str, object]]:
    return [{"op": "update_params", "step": "fetch", "params": {"url": url}}]


def reviewer(note: str = "", *, force: bool = False, role: str = "reviewer") -> Request:
    return Request(action="accept", actor="test-reviewer", note=note, force=force, role=role)


async def test_flaky_step_gets_a_retry_proposal_validated_in_shadow_and_applied(
    loop, upstream, stack
):
    settings, client, pool = loop
    wf = unique("orders")
    await push(pool, flow(wf, upstream.url("/flaky")))
    before = await run_many(client, pool, settings, wf, 40)
    observed = failure_rate(before)
    assert 0.25 < observed < 0.75, observed
    await traced(settings, wf, 40)

    filed, errors = await run_critic(client, pool, settings, actor="critic", workflow_id=wf)
    assert errors == []
    retry = [p for p in filed if p.kind == "retry"]
    assert len(retry) == 1, [p.title for p in filed]
    proposal = retry[0]
    assert proposal.step_id == "fetch" and proposal.status == "open"
    assert proposal.expected is not None and proposal.expected.metric == "error_rate"
    assert proposal.expected.current == pytest.approx(observed, abs=0.02)
    assert proposal.evidence.queries and proposal.evidence.runs and proposal.evidence.contrast
    attempts = proposal.mutation[0]["retry"]["max_attempts"]
    assert FLAKY_SHARE**attempts <= 0.02  # the smallest n for 1 %, with the estimate's noise

    again, _ = await run_critic(client, pool, settings, actor="critic", workflow_id=wf)
    assert [p.id for p in again if p.kind == "retry"] == [proposal.id]  # deduped, refreshed
    listed = await ProposalStore(pool).list(workflow_id=wf, kind="retry")
    assert [p.id for p in listed] == [proposal.id]

    await ask(client, pool, settings, proposal.id, Request(action="validate", actor="author"))
    judged = await wait_for(pool, proposal.id, JUDGED, timeout=180)
    assert judged.status == "validated", judged.validation
    assert judged.validation is not None and judged.validation.mode == "shadow"
    assert judged.validation.samples == {"baseline": 30, "candidate": 30}

    live_before = (await WorkflowRegistry(pool, "").live(wf)).version
    await ask(client, pool, settings, proposal.id, reviewer("fewer failed orders"))
    applied = await wait_for(pool, proposal.id, ("applied", "rejected"), timeout=60)
    assert applied.status == "applied", applied.history
    assert applied.applied is not None and applied.applied.previous_version == live_before
    live = await WorkflowRegistry(pool, "").live(wf)
    assert live.version == applied.applied.workflow_version != live_before
    assert "# the upstream is busy now and then" in live.source  # the author's comment kept
    assert f"max_attempts: {attempts}" in live.source
    assert proposal.id in live.note
    listed = stack.cli("workflows", "versions", wf)
    assert listed.returncode == 0 and proposal.id in listed.stdout  # the NOTE column

    after = await run_many(client, pool, settings, wf, 30, at_once=15)
    assert failure_rate(after) <= 0.2 * observed, (failure_rate(after), observed)


async def test_harmful_proposal_fails_validation_and_accept_is_refused(loop, upstream, stack):
    settings, client, pool = loop
    wf = unique("stable")
    await push(pool, flow(wf, upstream.url("/ok")))
    await run_many(client, pool, settings, wf, 30)
    mutation = repoint(upstream.url("/broken"))
    proposal = await create(
        client, pool, settings, actor="a person", workflow_id=wf, title="Use the new endpoint",
        mutation=mutation,
    )  # fmt: skip
    assert proposal.kind == "params" and proposal.source == "person"
    await ask(client, pool, settings, proposal.id, Request(action="validate", actor="a person"))
    judged = await wait_for(pool, proposal.id, JUDGED, timeout=120)
    assert judged.status == "failed_validation", judged.validation
    worse = {m.name for m in judged.validation.metrics if m.verdict == "worse"}
    assert "error_rate" in worse

    with pytest.raises(LifecycleError, match="not validated"):
        await ask(client, pool, settings, proposal.id, reviewer())
    with pytest.raises(LifecycleError, match="only an admin"):
        await ask(client, pool, settings, proposal.id, reviewer("sure", force=True))
    done = stack.cli("proposals", "accept", proposal.id)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "not validated" in done.stderr
    assert (await ProposalStore(pool).get(proposal.id)).status == "failed_validation"

    # A/A: a change that changes nothing the runs feel is not judged worse
    same = await create(
        client, pool, settings, actor="a person", workflow_id=wf, title="A longer timeout",
        mutation=[{"op": "set_policy", "step": "fetch", "timeout": "45s"}],
    )  # fmt: skip
    await ask(client, pool, settings, same.id, Request(action="validate", actor="a person"))
    aa = await wait_for(pool, same.id, JUDGED, timeout=120)
    assert aa.validation is not None and aa.validation.result != "fail", aa.validation


async def test_the_watch_reverts_an_applied_change_that_turns_bad(loop, upstream):
    settings, client, pool = loop
    wf = unique("watched")
    first = await push(pool, flow(wf, upstream.url("/ok")))
    await run_many(client, pool, settings, wf, 20)
    mutation = repoint(upstream.url("/broken"))
    proposal = await create(
        client, pool, settings, actor="an admin", workflow_id=wf, title="Move to the new host",
        mutation=mutation,
    )  # fmt: skip
    await ask(client, pool, settings, proposal.id,
              reviewer("the old host goes away today", force=True, role="admin"))  # fmt: skip
    applied = await wait_for(pool, proposal.id, ("applied",), timeout=60)
    assert applied.status == "applied"
    assert (await WorkflowRegistry(pool, "").live(wf)).version != first

    await run_many(client, pool, settings, wf, 20)
    reverted = await wait_for(pool, proposal.id, ("reverted",), timeout=90)
    assert reverted.status == "reverted", reverted.applied
    assert reverted.applied is not None and reverted.applied.watch["result"] == "fail"
    reverts = await ProposalStore(pool).list(workflow_id=wf, kind="revert")
    assert len(reverts) == 1 and reverts[0].source == "watch"
    revert = await wait_for(pool, reverts[0].id, ("applied",), timeout=60)
    assert revert.status == "applied" and proposal.id in revert.title
    assert (await WorkflowRegistry(pool, "").live(wf)).version == first


async def test_a_killed_worker_mid_canary_loses_nothing(loop, upstream, evolution):
    settings, client, pool = loop
    wf = unique("writes")
    await push(pool, flow(wf, upstream.url("/ok"), method="POST"))
    await run_many(client, pool, settings, wf, 5)
    proposal = await create(
        client, pool, settings, actor="a person", workflow_id=wf, title="A longer timeout",
        mutation=[{"op": "set_policy", "step": "fetch", "timeout": "45s"}],
    )  # fmt: skip
    asked = Request(action="validate", actor="a person", runs=6)
    await ask(client, pool, settings, proposal.id, asked)
    validating = await wait_for(pool, proposal.id, ("validating",), timeout=60)
    assert validating.validation is not None and validating.validation.mode == "canary"
    rollout = await WorkflowRegistry(pool, "").rollout(wf)
    assert rollout is not None and rollout.percent == 50

    evolution.kill()
    try:
        await run_many(client, pool, settings, wf, 12)  # the canary's share goes on meanwhile
        still = await ProposalStore(pool).get(proposal.id)
        assert still.status == "validating"
    finally:
        evolution.start()
    for _ in range(10):
        judged = await wait_for(pool, proposal.id, JUDGED, timeout=5)
        if judged.status in JUDGED:
            break
        await run_many(client, pool, settings, wf, 6)
    assert judged.status in JUDGED, judged.validation
    assert min(judged.validation.samples.values()) >= 6
    assert await WorkflowRegistry(pool, "").rollout(wf) is None  # back to 0


async def test_validate_of_a_workflow_with_no_runs_leaves_it_open(loop, upstream):
    settings, client, pool = loop
    wf = unique("idle")
    await push(pool, flow(wf, upstream.url("/ok")))
    proposal = await create(
        client, pool, settings, actor="a person", workflow_id=wf, title="Retry more",
        mutation=[{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 3}}],
    )  # fmt: skip
    with pytest.raises(LifecycleError, match="no ended live run to replay"):
        await ask(client, pool, settings, proposal.id, Request(action="validate", actor="a"))
    assert (await ProposalStore(pool).get(proposal.id)).status == "open"


async def test_auto_apply_applies_the_critics_validated_retry_without_a_person(loop, upstream):
    settings, client, pool = loop
    wf = unique("trusted")
    source = flow(wf, upstream.url("/flaky")) + "evolution: {auto_apply: [retry]}\n"
    await push(pool, source)
    await run_many(client, pool, settings, wf, 40)
    await traced(settings, wf, 40)
    filed, _ = await run_critic(client, pool, settings, actor="critic", workflow_id=wf)
    [proposal] = [p for p in filed if p.kind == "retry"]
    await ask(client, pool, settings, proposal.id, Request(action="validate", actor="author"))
    done = await wait_for(pool, proposal.id, ("applied", "failed_validation", "inconclusive"),
                          timeout=240)  # fmt: skip
    assert done.status == "applied", done.validation and done.validation.metrics
    accepted = [t for t in done.history if t.status == "accepted"]
    assert accepted[0].actor == "reflux" and "auto_apply" in accepted[0].note

    # a person's proposal of the same kind waits for a reviewer, whatever the workflow says
    person = await create(
        client, pool, settings, actor="a person", workflow_id=wf, title="Retry more",
        mutation=[{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 9}}],
    )  # fmt: skip
    assert person.kind == "retry"
    await ask(client, pool, settings, person.id, Request(action="validate", actor="a person"))
    judged = await wait_for(pool, person.id, JUDGED, timeout=240)
    assert judged.status in JUDGED
    await asyncio.sleep(2)
    assert (await ProposalStore(pool).get(person.id)).status == judged.status


async def test_a_problem_gone_by_the_next_scan_supersedes_its_proposal(loop):
    settings, client, pool = loop
    healthy = {"now": False}

    def sometimes(_: RecordedRequest) -> Reply:
        return Reply(200, {"amount": 1}) if healthy["now"] else Reply(503, {"error": "busy"})

    with HttpTestServer() as upstream:
        upstream.route("/sometimes", sometimes)
        wf = unique("healed")
        await push(pool, flow(wf, upstream.url("/sometimes")))
        await run_many(client, pool, settings, wf, 25)
        await traced(settings, wf, 25)
        filed, _ = await run_critic(client, pool, settings, actor="critic", workflow_id=wf)
        [retry] = [p for p in filed if p.kind == "retry"]

        healthy["now"] = True
        # A scan reads whole minutes (the rollup's): the healthy runs start in a minute
        # the failing ones did not touch, and the second scan reads only from it.
        now = datetime.now(UTC)
        fresh = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        await asyncio.sleep((fresh - now).total_seconds() + 0.1)
        await run_many(client, pool, settings, wf, 25)
        await traced(settings, wf, 50)
        since = datetime.now(UTC) - fresh  # only the healthy runs
        again, _ = await run_critic(
            client, pool, settings, actor="critic", workflow_id=wf, since=since
        )
        assert retry.id not in [p.id for p in again]
        gone = await wait_for(pool, retry.id, ("superseded",), timeout=30)
        assert gone.status == "superseded" and "no longer finds" in gone.history[-1].note
