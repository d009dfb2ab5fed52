"""A node version that fails more, rolled out to half the runs: the Critic files a
`node_version` proposal (stop the rollout), validated on the live traffic the rollout
splits (both arms at the same time, told apart by each run's pinned version), accepted,
and the rollout is over."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import Iterator

import pytest

from evolution import Request, ask, run_critic, wait_for
from infra import RefluxError
from infra.database import create_pool, database_url
from orchestrator import connect_temporal
from registry import NodeRegistry
from tests.evolution.loop import EvolutionWorker, push, run_many, traced, unique
from tests.helpers.stack import RunningStack
from tests.support.regressing_nodes import CATALOG

pytestmark = pytest.mark.timeout(300)
NODE = "test.lookup"


@pytest.fixture(scope="module")
def worker(stack: RunningStack) -> Iterator[EvolutionWorker]:
    started = EvolutionWorker(stack)
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def regressing(stack: RunningStack) -> Iterator[None]:
    service = stack.spawn("nodes", "serve", "--catalog", CATALOG, "--groups", "regressing")
    try:
        yield
    finally:
        service.terminate()
        service.wait(timeout=30)


def lookup_flow(workflow_id: str) -> str:
    return textwrap.dedent(
        f"""\
        id: {workflow_id}
        inputs:
          order: {{type: integer, default: 1}}
        steps:
          - id: fetch
            node: {NODE}@1
            with: {{key: "{workflow_id}-{{{{ inputs.order }}}}"}}
            retry: {{max_attempts: 1}}
        """
    )


async def test_a_regressed_node_version_in_a_rollout_gets_rolled_back(worker, regressing):
    settings = worker.settings
    client = await connect_temporal(settings)
    pool = await create_pool(database_url(settings), max_size=8)
    try:
        nodes = NodeRegistry(pool, "tests")
        for _ in range(100):  # the service registers its versions as drafts when it starts
            if {"1.0.0", "1.1.0"} <= {v.version for v in (await nodes.catalog()).versions.get(
                    NODE, [])}:  # fmt: skip
                break
            await asyncio.sleep(0.2)
        for version, to in (("1.0.0", "staging"), ("1.0.0", "production"), ("1.1.0", "staging")):
            await nodes.promote(NODE, version, to)
        await nodes.rollout(NODE, "1.1.0", 50)

        wf = unique("lookups")
        await push(pool, lookup_flow(wf))
        await run_many(client, pool, settings, wf, 70)
        await traced(settings, wf, 70)
        filed, errors = await run_critic(client, pool, settings, actor="critic", workflow_id=wf)
        assert errors == []
        [proposal] = [p for p in filed if p.kind == "node_version"]
        assert proposal.node == f"{NODE}@1.1.0"
        assert proposal.mutation == [
            {"op": "rollout", "node": NODE, "version": "1.1.0", "percent": 0}
        ]
        assert proposal.evidence.runs and proposal.evidence.queries

        await ask(client, pool, settings, proposal.id,
                  Request(action="validate", actor="author", runs=30))  # fmt: skip
        validating = await wait_for(pool, proposal.id, ("validating",), timeout=30)
        assert validating.validation is not None and validating.validation.mode == "canary"
        assert validating.validation.node_arms == {
            "node": NODE, "baseline": "1.1.0", "candidate": "1.0.0"}  # fmt: skip
        judged = validating
        for _ in range(12):  # live traffic, split by the rollout, fills both arms
            await run_many(client, pool, settings, wf, 15)
            judged = await wait_for(pool, proposal.id, ("validated", "failed_validation",
                                                        "inconclusive"), timeout=5)  # fmt: skip
            if judged.status != "validating":
                break
        assert judged.status == "validated", judged.validation

        await ask(client, pool, settings, proposal.id, Request(
            action="accept", actor="reviewer", note="1.1.0 breaks lookups"))  # fmt: skip
        applied = await wait_for(pool, proposal.id, ("applied", "rejected"), timeout=30)
        assert applied.status == "applied", applied.history
        assert NODE not in (await nodes.catalog()).rollouts
        after = await run_many(client, pool, settings, wf, 10)
        assert all(r.status == "completed" for r in after)
    finally:
        with contextlib.suppress(RefluxError):  # the next test of the session starts clean
            await NodeRegistry(pool, "tests").rollout(NODE, "1.1.0", 0)
        await pool.close()
