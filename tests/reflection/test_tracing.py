"""Every attempt of every step is traced exactly once: retried failures, the success after
them, each `for_each` item, a cache hit, skips and engine meta-steps. Checked twice: on the
JetStream stream as published, and in ClickHouse after the stack's trace sink, through the
commands a user runs (`reflux traces`, `reflux runs show`, `reflux stats`)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from orchestrator.plan import RunResult
from reflection.events import TraceEvent
from reflection.publisher import publisher_stats
from reflection.stream import STREAM, SUBJECT, decode
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
  - id: warm
    node: core.transform@1
    cache: {ttl: 10m}
    with: {value: "{{ inputs.dir }}"}
  - id: hit
    node: core.transform@1
    needs: [warm]
    cache: {ttl: 10m}
    with: {value: "{{ inputs.dir }}"}
"""

EXPECTED = {
    ("flaky", -1, 1),
    ("flaky", -1, 2),
    ("flaky", -1, 3),
    ("fan", 0, 1),
    ("fan", 1, 1),
    ("fan", 2, 1),
    ("never", -1, 1),
    ("after-never", -1, 1),
    ("pick", -1, 1),
    ("warm", -1, 1),
    ("hit", -1, 1),
}


async def stream_events(url: str, run_id: str, within: float = 300) -> list[TraceEvent]:
    """This run's events as they sit in the stream (anything else there is skipped,
    including messages other tests published malformed on purpose). Only what was published
    in the last `within` seconds is read: the session's stream holds every test's events."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        since = datetime.now(UTC) - timedelta(seconds=within)
        sub = await js.pull_subscribe(
            f"{SUBJECT}.>",
            stream=STREAM,
            # No acks: an acked consumer stops after max_ack_pending (1000) unacked messages,
            # which the session's stream passes long before its last test runs.
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=since,
                ack_policy=AckPolicy.NONE,
            ),
        )
        # Read exactly what the consumer had pending when made, however slowly a loaded
        # server hands it out: a short fetch timeout ended the read early and missed events.
        pending = (await sub.consumer_info()).num_pending
        found = []
        while pending > 0:
            try:
                batch = await sub.fetch(min(pending, 1000), timeout=10)
            except TimeoutError:  # nats-py raises both its own and asyncio's
                break
            pending -= len(batch)
            for msg in batch:
                rows, _ = decode(msg.data)
                found += [TraceEvent.model_validate(r) for r in rows if r["run_id"] == run_id]
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def traced(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    directory: Path = tmp_path_factory.mktemp("traced")
    result = stack.run(FLOW, {"dir": str(directory)})
    assert result.status == "completed", result.error
    assert result.steps["hit"].cache_hits == 1
    return result


def test_every_attempt_is_published_once(stack: RunningStack, traced: RunResult):
    url = nats_url(stack)

    def events() -> list[TraceEvent]:
        return asyncio.run(stream_events(url, traced.run_id))

    def all_there() -> list[TraceEvent]:
        found = events()
        seen = {(e.step_id, e.item, e.attempt) for e in found}
        assert seen >= EXPECTED, f"missing {sorted(EXPECTED - seen)} of {len(found)} events"
        return found

    found = wait_for(all_there, timeout=60, what="events")
    keys = Counter((e.step_id, e.item, e.attempt) for e in found)
    assert all(n == 1 for n in keys.values()), keys
    assert set(keys) == EXPECTED
    by_key = {(e.step_id, e.item, e.attempt): e for e in found}
    flaky = [by_key[("flaky", -1, n)] for n in (1, 2, 3)]
    assert [e.status for e in flaky] == ["error", "error", "ok"]
    assert [e.retry_count for e in flaky] == [0, 1, 2]
    assert flaky[0].error_class == "FlakyError" and "failing on purpose" in (flaky[0].error or "")
    assert flaky[2].replica and flaky[2].replica != "workflow"  # the node service that answered
    assert by_key[("never", -1, 1)].status == "skipped"
    assert by_key[("after-never", -1, 1)].status == "skipped"
    assert by_key[("pick", -1, 1)].status == "ok" and by_key[("pick", -1, 1)].replica == "workflow"
    assert [by_key[(s, -1, 1)].cache_hit for s in ("warm", "hit")] == [False, True]
    assert by_key[("warm", -1, 1)].inputs_hash == by_key[("hit", -1, 1)].inputs_hash
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
    assert workers and workers[0]["published"] >= len(EXPECTED) and workers[0]["dropped"] == 0
    json.dumps(workers)  # plain JSON, as `reflux status` shows it


def stored(stack: RunningStack, run_id: str) -> list[dict]:
    """`reflux traces RUN_ID --json` once the sink has stored the whole run."""

    def ask() -> list[dict] | None:
        done = stack.cli("traces", run_id, "--json")
        assert done.returncode == 0, done.stderr
        events = json.loads(done.stdout)
        return events if len(events) >= len(EXPECTED) else None

    found = wait_for(ask, timeout=60, every=0.3, what="the run's traces in ClickHouse")
    assert found is not None
    return found


def test_the_sink_stores_every_attempt_once(stack: RunningStack, traced: RunResult):
    events = stored(stack, traced.run_id)
    keys = Counter((e["step_id"], e["item"], e["attempt"]) for e in events)
    assert all(n == 1 for n in keys.values()) and set(keys) == EXPECTED, keys
    assert {e["run_id"] for e in events} == {traced.run_id}
    hit = next(e for e in events if e["step_id"] == "hit")
    assert hit["cache_hit"] is True and hit["status"] == "ok"

    shown = stack.cli("runs", "show", traced.run_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"run {traced.run_id}: traced (from a file), completed")
    assert sum("flaky" in line for line in lines) == 3
    assert any("hit" in line and "ok (cache)" in line for line in lines)
    assert any("FlakyError: " in line for line in lines)


def test_stats_count_what_the_run_did(stack: RunningStack, traced: RunResult):
    stored(stack, traced.run_id)
    done = stack.cli("stats", "--workflow", "traced", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    nodes = {(n["node"], n["node_version"]): n for n in body["nodes"]}
    flaky = nodes[("test.flaky", "1.0.0")]
    assert flaky["count"] == 3 and flaky["retry_rate"] == pytest.approx(2 / 3)
    assert flaky["error_rate"] == pytest.approx(2 / 3) and flaky["top_errors"] == ["FlakyError"]
    transform = nodes[("core.transform", "1.1.0")]  # 3 items + warm + hit; skips not counted
    assert transform["count"] == 5 and transform["cache_hit_rate"] == pytest.approx(1 / 5)
    assert transform["error_rate"] == 0
    [flow] = body["workflows"]
    assert flow["workflow_id"] == "traced" and flow["runs"] == 1
    assert body["failing_steps"] == [
        {"workflow_id": "traced", "step_id": "flaky", "failures": 2, "attempts": 3}
    ]

    table = stack.cli("stats", "--node", "test.flaky", "--workflow", "traced")
    assert table.returncode == 0, table.stderr
    assert "test.flaky" in table.stdout and "66.7%" in table.stdout


def test_sql_on_the_traces(stack: RunningStack, traced: RunResult):
    stored(stack, traced.run_id)
    sql = "SELECT step_id, count() AS n FROM traces WHERE run_id = {run:String} GROUP BY step_id"
    done = stack.cli("sql", sql + " ORDER BY step_id", "--param", f"run={traced.run_id}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["step_id", "n"] and lines[1].split() == ["after-never", "1"]
    as_json = stack.cli("sql", sql, "--param", f"run={traced.run_id}", "--json")
    counts = {r["step_id"]: r["n"] for r in json.loads(as_json.stdout)}
    assert counts["flaky"] == 3 and counts["fan"] == 3 and sum(counts.values()) == len(EXPECTED)

    refused = stack.cli("sql", "DROP TABLE traces")
    assert refused.returncode != 0 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1 and "only SELECT" in refused.stderr
    bad = stack.cli("sql", "SELECT 1", "--param", "novalue")
    assert bad.returncode == 2 and "expected NAME=VALUE" in bad.stderr
