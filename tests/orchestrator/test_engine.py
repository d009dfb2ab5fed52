"""The engine end to end: YAML through `reflux run --json`, Temporal, NATS, node services."""

from __future__ import annotations

import pytest

from tests.helpers.stack import RunningStack
from tests.support.nodes import events

pytestmark = pytest.mark.timeout(180)


def overlaps(a: dict, b: dict) -> bool:
    return a["started"] < b["finished"] and b["started"] < a["finished"]


def test_independent_steps_run_in_parallel_and_dependants_wait(stack: RunningStack, tmp_path):
    result = stack.run(
        """
        id: parallel
        steps:
          - id: a
            node: test.sleep@1
            with: {seconds: 1.0, label: a}
          - id: b
            node: test.sleep@1
            with: {seconds: 1.0, label: b}
          - id: c
            node: test.sleep@1
            with: {seconds: 0.1, label: "{{ steps.a.output.label }}{{ steps.b.output.label }}"}
        outputs:
          label: "{{ steps.c.output.label }}"
        """
    )
    assert result.status == "completed", result
    a, b, c = (result.steps[s].output for s in "abc")
    assert overlaps(a, b)
    assert c["started"] >= max(a["finished"], b["finished"])
    assert result.outputs == {"label": "ab"}


def test_retries_until_success(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: retries
        steps:
          - id: flaky
            node: test.flaky@1
            retry: {{max_attempts: 5, initial_interval: 1s, backoff: 1.0}}
            with: {{record_dir: "{tmp_path}", failures: 2}}
        """
    )
    assert result.status == "completed", result.error
    assert result.steps["flaky"].attempts == 3
    assert len(events(tmp_path)) == 3
    assert result.steps["flaky"].output == {"calls": 3}


def test_non_retryable_class_stops_at_one_attempt(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: non-retryable
        steps:
          - id: flaky
            node: test.flaky@1
            retry: {{max_attempts: 5, initial_interval: 1s, non_retryable: [FlakyError]}}
            with: {{record_dir: "{tmp_path}", failures: 3}}
        """
    )
    assert result.status == "failed"
    step = result.steps["flaky"]
    assert step.status == "failed" and step.attempts == 1
    assert step.error is not None and step.error.class_ == "FlakyError"
    assert result.error is not None and result.error.class_ == "FlakyError"
    assert len(events(tmp_path)) == 1


def test_node_marked_non_retryable_error_is_not_retried(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: node-says-final
        steps:
          - id: flaky
            node: test.flaky@1
            retry: {{max_attempts: 4, initial_interval: 1s}}
            with: {{record_dir: "{tmp_path}", failures: 3, retryable: false, error_class: Fatal}}
        """
    )
    assert result.steps["flaky"].attempts == 1
    assert result.steps["flaky"].error.class_ == "Fatal"
    assert len(events(tmp_path)) == 1


def test_timeout_fails_the_step(stack: RunningStack):
    result = stack.run(
        """
        id: timeouts
        steps:
          - id: slow
            node: test.sleep@1
            timeout: 1s
            retry: {max_attempts: 1}
            with: {seconds: 5}
          - id: after
            node: core.transform@1
            needs: [slow]
            with: {value: 1}
        """
    )
    assert result.status == "failed"
    assert result.steps["slow"].status == "failed"
    assert result.steps["slow"].error.class_ == "NodeTimeoutError"
    assert result.steps["after"].status == "cancelled"


def test_if_false_skips_and_propagates_to_output_readers_only(stack: RunningStack):
    result = stack.run(
        """
        id: skipping
        inputs:
          go: {type: boolean, default: false}
        steps:
          - id: maybe
            node: core.transform@1
            if: "{{ inputs.go }}"
            with: {value: 1}
          - id: reads_output
            node: core.transform@1
            with: {value: "{{ steps.maybe.output.value }}"}
          - id: needs_it
            node: core.transform@1
            needs: [maybe]
            with: {value: 2}
          - id: reads_status
            node: core.transform@1
            with: {value: "{{ steps.maybe.status }}"}
          - id: downstream
            node: core.transform@1
            with: {value: "{{ steps.reads_output.output.value }}"}
        outputs:
          status: "{{ steps.reads_status.output.value }}"
        """
    )
    assert result.status == "completed", result.error
    statuses = {sid: s.status for sid, s in result.steps.items()}
    assert statuses == {
        "maybe": "skipped",
        "reads_output": "skipped",
        "needs_it": "skipped",
        "reads_status": "completed",
        "downstream": "skipped",
    }
    assert result.outputs == {"status": "skipped"}


def test_for_each_keeps_order_and_bounds_concurrency(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: fan-out
        inputs:
          items: {{type: array}}
        steps:
          - id: each
            node: test.sleep@1
            for_each: "{{{{ inputs.items }}}}"
            concurrency: 2
            with: {{seconds: "{{{{ item }}}}", label: "i{{{{ index }}}}", record_dir: "{tmp_path}"}}
        outputs:
          labels: "{{{{ steps.each.output | map(attribute='label') | list }}}}"
        """,
        {"items": [0.6, 0.1, 0.3, 0.2, 0.4, 0.1]},
    )
    assert result.status == "completed", result.error
    assert result.outputs == {"labels": ["i0", "i1", "i2", "i3", "i4", "i5"]}
    runs = events(tmp_path)
    assert len(runs) == 6
    peak = max(sum(o["started"] <= r["started"] < o["finished"] for o in runs) for r in runs)
    assert peak == 2


def test_versions_of_one_node_are_chosen_by_pin(stack: RunningStack):
    result = stack.run(
        """
        id: pins
        steps:
          - {id: one, node: test.echo@1, with: {value: 1}}
          - {id: one_zero, node: test.echo@1.0, with: {value: 1}}
          - {id: exact, node: test.echo@1.0.0, with: {value: 1}}
          - {id: two, node: test.echo@2, with: {value: 2}}
          - {id: newest, node: test.echo, with: {value: 3}}
        """
    )
    assert result.status == "completed", result.error
    answered = {sid: s.output["version"] for sid, s in result.steps.items()}
    assert answered == {
        "one": "1.1.0",
        "one_zero": "1.0.0",
        "exact": "1.0.0",
        "two": "2.0.0",
        "newest": "2.0.0",
    }


def test_failure_cancels_pending_steps_and_continue_on_error_does_not(
    stack: RunningStack, tmp_path
):
    result = stack.run(
        f"""
        id: failing
        steps:
          - id: soft
            node: test.flaky@1
            continue_on_error: true
            retry: {{max_attempts: 1}}
            with: {{record_dir: "{tmp_path / "soft"}", failures: 5}}
          - id: after_soft
            node: core.transform@1
            with: {{value: "{{{{ steps.soft.status }}}}"}}
          - id: hard
            node: test.flaky@1
            needs: [after_soft]
            retry: {{max_attempts: 1}}
            with: {{record_dir: "{tmp_path / "hard"}", failures: 5, error_class: Boom}}
          - id: never
            node: core.transform@1
            needs: [hard]
            with: {{value: 1}}
        """
    )
    assert result.status == "failed"
    statuses = {sid: s.status for sid, s in result.steps.items()}
    assert statuses == {
        "soft": "failed",
        "after_soft": "completed",
        "hard": "failed",
        "never": "cancelled",
    }
    assert result.steps["after_soft"].output == {"value": "failed"}
    assert result.error.class_ == "Boom"


def test_expression_error_at_run_time_fails_the_step(stack: RunningStack):
    result = stack.run(
        """
        id: bad-expression
        inputs:
          n: {type: integer, default: 0}
        steps:
          - id: divide
            node: core.transform@1
            with: {value: "{{ 10 // inputs.n }}"}
        """
    )
    assert result.status == "failed"
    assert result.steps["divide"].error.class_ == "ExpressionError"


def test_skips_propagate_whatever_the_order_steps_are_listed_in(stack: RunningStack):
    result = stack.run(
        """
        id: listed-backwards
        steps:
          - {id: c, node: core.transform@1, with: {value: "{{ steps.b.output.value }}"}}
          - {id: b, node: core.transform@1, with: {value: "{{ steps.a.output.value }}"}}
          - {id: a, node: core.transform@1, if: false, with: {value: 1}}
          - {id: d, node: core.transform@1, with: {value: "{{ steps.c.status }}"}}
        """
    )
    assert result.status == "completed", result.error
    assert {sid: s.status for sid, s in result.steps.items()} == {
        "c": "skipped",
        "b": "skipped",
        "a": "skipped",
        "d": "completed",
    }


def test_bad_params_of_an_engine_step_fail_that_step(stack: RunningStack):
    result = stack.run(
        """
        id: bad-switch
        inputs:
          cases: {type: any, default: [a, b]}
        steps:
          - {id: pick, node: core.switch@1, with: {value: b, cases: "{{ inputs.cases }}"}}
        """
    )
    assert result.status == "failed"
    assert result.error is not None and result.error.class_ == "ValidationError"
    assert result.error.message == "core.switch: with.cases: Input should be a valid dictionary"
