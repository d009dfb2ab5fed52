"""Per-step overhead: 40 sequential light steps through Reflux vs a plain Temporal chain
(regular activities), and the same chain as local activities (no server round trip per
step: the floor of a fast path).

All run in the same session on the same embedded Temporal server, so the ratios are what
count on a shared, noisy machine. The plain chains are timed end to end by the client;
Reflux from its first step's start to its last step's end (workflow time), which flatters
Reflux by the run's start and end.
Usage: python bench/step_overhead.py [--steps 40] [--runs 5]
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
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.settings import Settings  # noqa: E402
from orchestrator.runs import connect_temporal  # noqa: E402
from tests.helpers.stack import start_test_stack, stop_test_stack  # noqa: E402


@activity.defn(name="bench.noop")
async def noop(value: int) -> int:
    return value + 1


@workflow.defn(name="bench.chain")
class Chain:
    @workflow.run
    async def run(self, steps: int) -> int:
        value = 0
        for _ in range(steps):
            value = await workflow.execute_activity(
                "bench.noop", value, start_to_close_timeout=timedelta(seconds=30)
            )
        return value


@workflow.defn(name="bench.local_chain")
class LocalChain:
    """The same chain as local activities: no server round trip per step (the floor a
    fast path could reach)."""

    @workflow.run
    async def run(self, steps: int) -> int:
        value = 0
        for _ in range(steps):
            value = await workflow.execute_local_activity(
                "bench.noop", value, start_to_close_timeout=timedelta(seconds=30)
            )
        return value


def flow(steps: int) -> str:
    lines = ["id: overhead", "steps:", "  - {id: s0, node: core.transform@1, with: {value: 0}}"]
    for i in range(1, steps):
        lines.append(
            f"  - {{id: s{i}, node: core.transform@1,"
            f" with: {{value: '{{{{ steps.s{i - 1}.output.value + 1 }}}}'}}}}"
        )
    return "\n".join(lines) + "\n"


async def plain_chain(
    settings: Settings, steps: int, runs: int, chain: type = Chain
) -> list[float]:
    client = await connect_temporal(settings)
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    times = []
    # Unsandboxed: this module is not sandbox-importable (and it favours the baseline).
    runner = UnsandboxedWorkflowRunner()
    async with Worker(
        client,
        task_queue=queue,
        workflows=[Chain, LocalChain],
        activities=[noop],
        workflow_runner=runner,
    ):
        for _ in range(runs):
            started = time.perf_counter()
            await client.execute_workflow(
                chain.run, steps, id=f"bench-{uuid.uuid4().hex}", task_queue=queue
            )
            times.append(time.perf_counter() - started)
    return times


def reflux_runs(stack, steps: int, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        result = stack.run(flow(steps))
        assert result.status == "completed", result.error
        first = min(s.started_at for s in result.steps.values())
        last = max(s.finished_at for s in result.steps.values())
        times.append(last - first)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("starting an embedded stack ...", file=sys.stderr)
    stack = start_test_stack(Path(tempfile.mkdtemp(prefix="reflux-bench-")))
    try:
        plain = asyncio.run(plain_chain(stack.settings, args.steps, args.runs))
        local = asyncio.run(plain_chain(stack.settings, args.steps, args.runs, LocalChain))
        ours = reflux_runs(stack, args.steps, args.runs)
    finally:
        stop_test_stack(stack)
    per_plain = statistics.median(plain) / args.steps * 1000
    per_local = statistics.median(local) / args.steps * 1000
    per_ours = statistics.median(ours) / args.steps * 1000
    print(
        json.dumps(
            {
                "steps": args.steps,
                "runs": args.runs,
                "plain_temporal_ms_per_step": round(per_plain, 2),
                "plain_temporal_local_activities_ms_per_step": round(per_local, 2),
                "reflux_ms_per_step": round(per_ours, 2),
                "reflux_vs_plain": round(per_ours / per_plain, 2),
                "goal": "<= 5 ms per step and >= 5x faster than plain (DESIGN.md)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
