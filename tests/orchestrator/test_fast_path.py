"""The fast path: short steps run as Temporal local activities, long ones as regular
activities; chosen from the step's timeout and its node's declared one, overridable per step."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import EventType

from orchestrator.plan import build_plan
from orchestrator.runs import connect_temporal, run_handle
from orchestrator.validate import parse_spec
from registry.versions import Catalog, VersionInfo
from tests.helpers.stack import RunningStack
from tests.support.nodes import events

pytestmark = pytest.mark.timeout(180)

CATALOG = Catalog(
    {
        "core.transform": [VersionInfo("1.1.0", "production", timeout=5.0)],
        "test.sleep": [VersionInfo("1.0.0", "production")],
    }
)
FLOW = """
id: mixed
steps:
  - {id: short, node: core.transform@1, with: {value: 1}}
  - {id: forced_off, node: core.transform@1, local: false, with: {value: 2}}
  - {id: long, node: test.sleep@1, with: {seconds: 0}}
  - {id: short_by_step, node: test.sleep@1, timeout: 2s, with: {seconds: 0}}
  - {id: long_by_step, node: core.transform@1, timeout: 1m, with: {value: 3}}
  - {id: forced_on, node: test.sleep@1, local: true, with: {seconds: 0}}
"""
LOCAL = {"short", "short_by_step", "forced_on"}


def test_the_plan_picks_local_steps_from_timeouts_and_overrides():
    spec = parse_spec(FLOW)
    pins = {s.id: ("1.1.0" if s.node_name == "core.transform" else "1.0.0") for s in spec.steps}
    plan = build_plan(spec, pins, catalog=CATALOG, local_timeout=10)
    steps = {s.id: s for s in plan.steps}
    assert {s.id for s in plan.steps if s.local} == LOCAL
    assert steps["short"].timeout == 5.0  # the node's declared timeout
    assert steps["long"].timeout == 300.0  # nothing declared: the default
    assert steps["long_by_step"].timeout == 60.0
    off = build_plan(spec, pins, catalog=CATALOG, local_timeout=0)
    assert {s.id for s in off.steps if s.local} == {"forced_on"}  # 0: only explicit ones


async def step_activities(stack: RunningStack, run_id: str) -> tuple[set[str], int]:
    """(steps scheduled as regular activities, local activities recorded) in a run's history."""
    client = await connect_temporal(stack.settings)
    history = await run_handle(client, run_id).fetch_history()
    regular, markers = set(), 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "reflux.step":
                regular.add(json.loads(attrs.input.payloads[0].data)["step_id"])
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            if event.marker_recorded_event_attributes.marker_name == "core_local_activity":
                markers += 1
    return regular, markers


def test_short_steps_run_as_local_activities_and_long_ones_do_not(stack: RunningStack):
    result = stack.run(FLOW)
    assert result.status == "completed", result.error
    regular, markers = asyncio.run(step_activities(stack, result.run_id))
    assert regular == {s for s in result.steps} - LOCAL
    assert markers == len(LOCAL) + 1  # and the run's end, recorded in the ledger


def test_local_steps_retry_and_fail_like_regular_ones(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: local-retries
        steps:
          - id: flaky
            node: test.flaky@1
            local: true
            retry: {{max_attempts: 5, initial_interval: 0.1s, backoff: 1.0}}
            with: {{record_dir: "{tmp_path}/a", failures: 2}}
          - id: broken
            node: test.flaky@1
            local: true
            needs: [flaky]
            retry: {{max_attempts: 2, initial_interval: 0.1s}}
            with: {{record_dir: "{tmp_path}/b", failures: 5, error_class: Broken}}
        """
    )
    assert result.status == "failed"
    assert result.steps["flaky"].status == "completed"
    assert result.steps["flaky"].attempts == 3
    assert [e["attempt"] for e in events(tmp_path / "a")] == [1, 2, 3]
    assert result.steps["broken"].status == "failed"
    assert result.steps["broken"].attempts == 2
    assert result.error is not None and result.error.class_ == "Broken"


def test_a_local_step_times_out_cleanly(stack: RunningStack):
    result = stack.run(
        """
        id: local-timeout
        steps:
          - {id: slow, node: test.sleep@1, timeout: 0.5s, retry: {max_attempts: 1},
             with: {seconds: 5}}
        """
    )
    assert result.status == "failed"
    assert result.error is not None and result.error.class_ == "NodeTimeoutError"
    assert "gave no reply within 0.5s" in result.error.message


def test_every_call_carries_its_idempotency_key(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: keys
        steps:
          - id: each
            node: test.sleep@1
            for_each: [a, b, c]
            with: {{label: "{{{{ item }}}}", record_dir: "{tmp_path}"}}
          - id: one
            node: test.sleep@1
            local: true
            with: {{label: one, record_dir: "{tmp_path}"}}
        """
    )
    assert result.status == "completed", result.error
    keys = sorted(e["key"] for e in events(tmp_path))
    run = result.run_id
    assert keys == sorted([f"{run}/each/{i}/1" for i in range(3)] + [f"{run}/one/1"])
