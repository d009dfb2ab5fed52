"""Runs the engine cannot carry through end failed, with the reason, never `completed` with
steps still pending and never wedged (a workflow task failing, retried forever)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.plan import RunRequest
from tests.helpers.requests import run_request
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(180)

CHAIN = """
id: {id}
steps:
  - {{id: a, node: core.transform@1, with: {{value: 1}}}}
  - {{id: b, node: core.transform@1, needs: [a], with: {{value: 2}}}}
  - {{id: c, node: core.transform@1, needs: [b], with: {{value: 3}}}}
  - {{id: d, node: core.transform@1, needs: [c], with: {{value: 4}}}}
"""


def needs(step_id: str, *needed: str):
    """A change to the prepared plan: validation would refuse it, the engine must cope."""

    def change(request: RunRequest) -> None:
        step = next(s for s in request.plan.steps if s.id == step_id)
        step.needs = step.needs_output = sorted(needed)

    return change


def test_steps_a_cycle_keeps_from_running_fail_the_run(stack: RunningStack):
    _, result = asyncio.run(run_request(stack, CHAIN.format(id="cycle"), change=needs("b", "d")))
    assert result.status == "failed", result
    assert result.error is not None
    assert result.error.message.startswith("unreachable steps: b, c, d")
    assert result.steps["a"].status == "completed"
    assert {result.steps[s].status for s in "bcd"} == {"failed"}


def test_a_step_waiting_on_an_unknown_step_fails_the_run(stack: RunningStack):
    _, result = asyncio.run(
        run_request(stack, CHAIN.format(id="unknown-need"), change=needs("c", "b", "ghost"))
    )
    assert result.status == "failed", result
    assert result.error is not None
    assert result.error.message.startswith("unreachable steps: c, d")
    assert (result.steps["a"].status, result.steps["b"].status) == ("completed", "completed")


def test_a_timeout_too_large_for_temporal_fails_the_step(stack: RunningStack):
    """Valid YAML whose step the workflow cannot schedule (the timeout overflows Python's
    timedelta): the step fails with the reason instead of the task failing forever."""
    _, result = asyncio.run(
        run_request(
            stack,
            """
            id: huge-timeout
            steps:
              - {id: ok, node: core.transform@1, with: {value: 1}}
              - {id: huge, node: core.transform@1, needs: [ok], timeout: 99999999999d,
                 with: {value: 2}}
              - {id: after, node: core.transform@1, needs: [huge], with: {value: 3}}
            """,
        )
    )
    assert result.status == "failed", result
    huge = result.steps["huge"]
    assert huge.status == "failed" and huge.error is not None
    assert huge.error.class_ == "EngineError"
    assert "\n" not in huge.error.message and "huge" in huge.error.message
    assert result.steps["after"].status == "cancelled"


def test_a_delay_too_long_for_temporal_fails_the_step(stack: RunningStack):
    _, result = asyncio.run(
        run_request(
            stack,
            """
            id: huge-delay
            steps:
              - {id: wait, node: core.delay@1, with: {duration: 99999999999d}}
            """,
        )
    )
    assert result.status == "failed", result
    assert result.steps["wait"].status == "failed"
    assert result.steps["wait"].error.class_ in ("EngineError", "ValidationError")


def test_a_template_giving_a_value_no_payload_can_hold_fails_the_step(stack: RunningStack):
    _, result = asyncio.run(
        run_request(
            stack,
            """
            id: odd-value
            steps:
              - {id: odd, node: core.transform@1, with: {value: "{{ cycler(1, 2) }}"}}
            """,
        )
    )
    assert result.status == "failed", result
    odd = result.steps["odd"]
    assert odd.status == "failed" and odd.error is not None
    assert odd.error.class_ in ("EngineError", "ExpressionError")


def test_outputs_no_payload_can_hold_fail_the_run(stack: RunningStack):
    _, result = asyncio.run(
        run_request(
            stack,
            """
            id: odd-output
            steps:
              - {id: ok, node: core.transform@1, with: {value: 1}}
            outputs:
              odd: "{{ cycler(1, 2) }}"
            """,
        )
    )
    assert result.status == "failed", result
    assert result.error is not None and result.error.class_ in ("EngineError", "ExpressionError")
