"""Every attempt of every step is traced to the JetStream stream exactly once: retried
failures, the success after them, each `for_each` item, skips and engine meta-steps."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from reflection.events import TraceEvent
from reflection.publisher import publisher_stats
from reflection.stream import STREAM, SUBJECT
from tests.helpers.stack import RunningStack, nats_url
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

FLOW = """
id: traced
inputs:
  dir: {type: string}
steps:
  - id: flaky
    node: test.flaky@1
    with: {record_dir: "{{ inputs.dir }}", failures: 2}
    retry: {max_attempts: 3, initial_interval: 1s}
  - id: fan
    node: core.transform@1
    for_each: [10, 20, 30]
    with: {value: "{{ item }}"}
  - id: never
    node: core.transform@1
    if: "{{ false }}"
    with: {value: 1}
  - id: after-never
    node: core.transform@1
    with: {value: "{{ steps.never.output.value }}"}
  - id: pick
    node: core.switch@1
    with: {cases: {a: true}}
"""


async def stream_events(url: str, run_id: str) -> list[TraceEvent]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            f"{SUBJECT}.>",
            stream=STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        found = []
        while True:
            try:
                batch = await sub.fetch(1000, timeout=0.5)
            except TimeoutError:  # nats-py raises both its own and asyncio's
                break
            for msg in batch:
                event = TraceEvent.model_validate_json(msg.data)
                if event.run_id == run_id:
                    found.append(event)
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def test_every_attempt_is_traced_once(stack: RunningStack, tmp_path):
    result = stack.run(FLOW, {"dir": str(tmp_path)})
    assert result.status == "completed", result.error
    url = nats_url(stack)

    def events() -> list[TraceEvent]:
        return asyncio.run(stream_events(url, result.run_id))

    found = wait_for(lambda: (e := events()) and len(e) >= 9 and e, what="9 trace events")
    keys = Counter((e.step_id, e.item, e.attempt) for e in found)
    assert all(n == 1 for n in keys.values()), keys
    by_key = {(e.step_id, e.item, e.attempt): e for e in found}
    assert set(by_key) == {
        ("flaky", -1, 1),
        ("flaky", -1, 2),
        ("flaky", -1, 3),
        ("fan", 0, 1),
        ("fan", 1, 1),
        ("fan", 2, 1),
        ("never", -1, 1),
        ("after-never", -1, 1),
        ("pick", -1, 1),
    }
    flaky = [by_key[("flaky", -1, n)] for n in (1, 2, 3)]
    assert [e.status for e in flaky] == ["error", "error", "ok"]
    assert [e.retry_count for e in flaky] == [0, 1, 2]
    assert flaky[0].error_class == "FlakyError" and "failing on purpose" in (flaky[0].error or "")
    assert flaky[2].replica and flaky[2].replica != "workflow"  # the node service that answered
    assert by_key[("never", -1, 1)].status == "skipped"
    assert by_key[("after-never", -1, 1)].status == "skipped"
    assert by_key[("pick", -1, 1)].status == "ok" and by_key[("pick", -1, 1)].replica == "workflow"
    assert len({e.inputs_hash for e in found if e.step_id == "fan"}) == 3  # one per item
    for event in found:
        assert event.workflow_id == "traced" and event.namespace == "default"
        assert event.end >= event.start and event.latency_ms >= 0

    async def stats() -> list[dict]:
        nc = await nats.connect(url)
        try:
            return await publisher_stats(nc)
        finally:
            await nc.close()

    workers = [s for s in asyncio.run(stats()) if s["publisher"].startswith("worker")]
    assert workers and workers[0]["published"] >= 9 and workers[0]["dropped"] == 0
    json.dumps(workers)  # plain JSON, as `reflux status` shows it
