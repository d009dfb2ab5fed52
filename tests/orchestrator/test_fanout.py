"""Large `for_each` fan-outs: sharded into child workflows (at most `fanout_shard_items`
items each), outputs in order, the step's concurrency bounding the whole step, cancelling
the run cancels its shards; over `fanout_max_items` the step fails at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from orchestrator.payloads import payload_sizes
from orchestrator.plan import RunRequest
from orchestrator.runs import run_handle, wait_run
from tests.helpers.requests import run_request, start_request
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually_async
from tests.orchestrator.test_large_values import LIMIT

pytestmark = pytest.mark.timeout(300)

FAN_OUT = """
id: {id}
inputs:
  items: {{type: array}}
  pad: {{type: string, default: ""}}
steps:
  - id: each
    node: {node}
    for_each: "{{{{ inputs.items }}}}"
    {concurrency}
    with: {with_}
outputs:
  count: "{{{{ steps.each.output | length }}}}"
"""


def fan_out(
    id: str,
    with_: str = '{value: "{{ index }}:{{ item }}:{{ inputs.pad }}"}',
    node: str = "core.transform@1",
    concurrency: int | None = None,
) -> str:
    bound = f"concurrency: {concurrency}" if concurrency else ""
    return FAN_OUT.format(id=id, with_=with_, node=node, concurrency=bound)


def shard_items(size: int):
    def change(request: RunRequest) -> None:
        assert request.limits is not None
        request.limits.fanout_shard_items = size

    return change


async def children(client: Client, run_id: str) -> list[str]:
    """The ids of the child workflows the run started, in the order it started them."""
    history = await run_handle(client, run_id).fetch_history()
    return [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]


async def history_payload_sizes(client: Client, workflow_id: str) -> list[int]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return payload_sizes(history)


def test_a_fanout_over_one_shard_runs_in_child_workflows_in_order(stack: RunningStack):
    items = [3 * i + 7 for i in range(3000)]
    pad = "x" * 200  # 3,000 outputs of ~220 bytes: the step's output list is offloaded

    async def go() -> dict[str, Any]:
        client, result = await run_request(
            stack,
            fan_out("shards", concurrency=400),
            {"items": items, "pad": pad},
            shard_items(1000),
            timeout=180,
        )
        ids = await children(client, result.run_id)
        described = [await client.get_workflow_handle(i).describe() for i in ids]
        sizes = [s for i in [result.run_id, *ids] for s in await history_payload_sizes(client, i)]
        return {"result": result, "ids": ids, "described": described, "sizes": sizes}

    seen = asyncio.run(go())
    result = seen["result"]
    assert result.status == "completed", result.error
    each = result.steps["each"]
    assert each.status == "completed" and each.attempts == 3000
    assert each.output == [{"value": f"{i}:{item}:{pad}"} for i, item in enumerate(items)]
    assert result.outputs == {"count": 3000}
    run_id = result.run_id
    assert seen["ids"] == [f"{run_id}/each/{i}" for i in range(3)]
    spans = [(d.start_time, d.close_time) for d in seen["described"]]
    assert all(d.status == WorkflowExecutionStatus.COMPLETED for d in seen["described"])
    # concurrency 400 over shards of 1000: two children at a time, 200 items in flight each
    at_once = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert at_once == 2
    assert max(seen["sizes"]) < LIMIT, "every payload in history is small"


def test_a_fanout_within_one_shard_stays_in_the_workflow(stack: RunningStack):
    async def go() -> tuple[Any, list[str]]:
        client, result = await run_request(
            stack, fan_out("one-shard"), {"items": list(range(20))}, shard_items(1000)
        )
        return result, await children(client, result.run_id)

    result, ids = asyncio.run(go())
    assert result.status == "completed", result.error
    assert [o["value"] for o in result.steps["each"].output] == [f"{i}:{i}:" for i in range(20)]
    assert ids == []


def test_a_for_each_over_the_limit_fails_at_once(stack: RunningStack):
    async def go() -> tuple[Any, list[str], float]:
        started = time.monotonic()
        client, result = await run_request(
            stack, fan_out("too-many"), {"items": list(range(150_000))}, timeout=60
        )
        return result, await children(client, result.run_id), time.monotonic() - started

    result, ids, took = asyncio.run(go())
    assert result.status == "failed"
    each = result.steps["each"]
    assert each.status == "failed" and each.attempts == 0
    message = "for_each gave 150000 items, over the limit of 100000 (REFLUX_FANOUT_MAX_ITEMS)"
    assert each.error is not None and each.error.message == message
    assert result.error is not None and result.error.message == message
    assert ids == [] and took < 30


def test_a_failing_item_fails_the_step_and_ends_its_shards(stack: RunningStack):
    items = [1] * 2500
    items[1500] = 0  # in the second shard

    async def go() -> tuple[Any, list[Any]]:
        client, result = await run_request(
            stack,
            fan_out("shard-fails", with_='{value: "{{ 10 // item }}"}'),
            {"items": items},
            shard_items(1000),
            timeout=180,
        )
        ids = await children(client, result.run_id)
        return result, [await client.get_workflow_handle(i).describe() for i in ids]

    result, described = asyncio.run(go())
    assert result.status == "failed"
    each = result.steps["each"]
    assert each.status == "failed"
    assert each.error is not None and each.error.class_ == "ExpressionError"
    assert "division" in each.error.message
    assert described and all(d.status != WorkflowExecutionStatus.RUNNING for d in described)


def test_cancelling_the_run_cancels_its_shards(stack: RunningStack):
    async def go() -> tuple[Any, list[Any]]:
        client, handle = await start_request(
            stack,
            fan_out("shard-cancel", with_="{seconds: 60}", node="test.sleep@1"),
            {"items": [1, 2, 3, 4]},
            shard_items(2),
        )

        async def both_shards() -> list[str]:
            ids = await children(client, handle.id)
            assert len(ids) >= 2, f"shards started: {ids}"
            return ids

        ids = await eventually_async(both_shards, timeout=60, every=0.1, what="the shards starting")
        await handle.cancel()
        result = await asyncio.wait_for(wait_run(handle), 60)
        return result, [await client.get_workflow_handle(i).describe() for i in ids]

    result, described = asyncio.run(go())
    assert result.status == "cancelled"
    assert result.steps["each"].status == "cancelled"
    assert [d.status for d in described] == [WorkflowExecutionStatus.CANCELED] * 2
