"""The evolution worker runs the lifecycle workflow unsandboxed, as the engine's worker runs
its own; this replays real lifecycle histories (validation, reject, a forced accept, apply,
the watch to its end) under Temporal's workflow sandbox, so lifecycle code that is
non-deterministic or reaches for time, randomness or I/O fails here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from evolution import Request, ask, create, wait_for
from evolution.proposals.lifecycle import ProposalWorkflow
from infra.database import create_pool, database_url
from orchestrator import connect_temporal
from tests.evolution.loop import EvolutionWorker, flow, push, run_many, unique
from tests.helpers.httpserver import HttpTestServer, Reply
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(240)

SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "evolution", "infra", "orchestrator", "registry", "reflection", "nodes"
    )
)


@pytest.fixture(scope="module")
def worker(stack: RunningStack) -> Iterator[EvolutionWorker]:
    started = EvolutionWorker(stack)
    started.start()
    try:
        yield started
    finally:
        started.stop()


async def test_lifecycle_histories_replay_under_the_sandbox(worker):
    settings = worker.settings
    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), max_size=4)
    with HttpTestServer() as upstream:
        upstream.route("/ok", lambda _: Reply(200, {"amount": 1}))
        try:
            wf = unique("replayed")
            await push(pool, flow(wf, upstream.url("/ok")))
            await run_many(client, pool, settings, wf, 3)
            change = [{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 2}}]
            judged = await create(client, pool, settings, actor="a", workflow_id=wf,
                                  title="Retry once more", mutation=change)  # fmt: skip
            await ask(client, pool, settings, judged.id,
                      Request(action="validate", actor="a", runs=3))  # fmt: skip
            done = await wait_for(pool, judged.id, ("inconclusive",), timeout=60)
            assert done.status == "inconclusive", done.validation
            await ask(client, pool, settings, judged.id,
                      Request(action="reject", actor="r", note="too few runs"))  # fmt: skip
            assert (await wait_for(pool, judged.id, ("rejected",), 30)).status == "rejected"

            applied = await create(client, pool, settings, actor="a", workflow_id=wf,
                                   title="Retry twice", mutation=change)  # fmt: skip
            forced = Request(action="accept", actor="ad", note="now", force=True, role="admin")
            await ask(client, pool, settings, applied.id, forced)
            assert (await wait_for(pool, applied.id, ("applied",), 30)).status == "applied"
            await run_many(client, pool, settings, wf, 20)
            watched = await wait_for(pool, applied.id, ("reverted",), timeout=5)
            for proposal_id in (judged.id, applied.id):
                handle = client.get_workflow_handle(proposal_id)
                if proposal_id == applied.id:  # the watch ends after its 20 runs
                    await handle.result()
                history = await handle.fetch_history()
                replayer = Replayer(
                    workflows=[ProposalWorkflow],
                    workflow_runner=SANDBOX,
                    data_converter=client.data_converter,
                )
                await replayer.replay_workflow(history)
            assert watched.applied is not None
        finally:
            await pool.close()
