"""Run start: submit → the workflow scheduling its first step, with pins resolved from the
registry and the run recorded in the ledger, vs a plain Temporal `start_workflow` of a
workflow that does nothing, on the same embedded server in the same session.

Both sides are timed from the client's submit to the workflow's own clock at its first
task, so the ratio is what to read. Also printed: the registry's share (catalog snapshot +
pin resolution + ledger insert). Usage: python bench/run_start.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.database import pool_for  # noqa: E402
from infra.settings import Settings  # noqa: E402
from orchestrator.runs import connect_temporal, submit, wait_run  # noqa: E402
from orchestrator.validate import parse_spec  # noqa: E402
from registry.nodes import NodeRegistry  # noqa: E402
from tests.helpers.stack import start_test_stack, stop_test_stack  # noqa: E402

FLOW = "id: start\nsteps:\n  - {id: a, node: core.transform@1, with: {value: 1}}\n"


@workflow.defn(name="bench.now")
class Now:
    @workflow.run
    async def run(self) -> float:
        return workflow.now().timestamp()


async def plain(settings: Settings, runs: int) -> list[float]:
    client = await connect_temporal(settings)
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    runner = UnsandboxedWorkflowRunner()
    took = []
    async with Worker(client, task_queue=queue, workflows=[Now], workflow_runner=runner):
        for _ in range(runs):
            submitted = time.time()
            began = await client.execute_workflow(
                Now.run, id=f"bench-{uuid.uuid4().hex}", task_queue=queue
            )
            took.append(began - submitted)
    return took


async def ours(settings: Settings, runs: int) -> tuple[list[float], list[float]]:
    client = await connect_temporal(settings)
    spec = parse_spec(FLOW)
    took, registry_share = [], []
    async with pool_for(settings) as pool:
        for _ in range(runs):
            submitted = time.time()
            catalog = await NodeRegistry(pool, settings.user).catalog()
            handle = await submit(client, pool, settings, spec, catalog, {})
            registry_share.append(time.time() - submitted)  # upper bound: includes the start
            result = await wait_run(handle)
            assert result.status == "completed", result.error
            began = result.steps["a"].started_at
            assert began is not None
            took.append(began - submitted)
    return took, registry_share


def ms(values: list[float], q: float = 0.5) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print("starting an embedded stack ...", file=sys.stderr)
    stack = start_test_stack(Path(tempfile.mkdtemp(prefix="reflux-bench-")))
    try:
        baseline = asyncio.run(plain(stack.settings, args.runs))
        took, submit_times = asyncio.run(ours(stack.settings, args.runs))
    finally:
        stop_test_stack(stack)
    print(
        json.dumps(
            {
                "runs": args.runs,
                "plain_start_ms_p50": ms(baseline),
                "plain_start_ms_p95": ms(baseline, 0.95),
                "reflux_start_ms_p50": ms(took),
                "reflux_start_ms_p95": ms(took, 0.95),
                "reflux_submit_call_ms_p50": ms(submit_times),
                "reflux_vs_plain_p50": round(
                    statistics.median(took) / statistics.median(baseline), 2
                ),
                "goal": "p50 <= 25 ms submit -> first step running (DESIGN.md)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
