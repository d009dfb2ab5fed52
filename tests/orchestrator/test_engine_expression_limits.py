"""A template over its limits fails its step, quickly, and leaves the worker healthy.

Templates render inside the Temporal workflow: before they were bounded, one building a
gigabyte string or looping 10**10 times held the workflow task (the deadlock detector fired
on every retry) and the run could neither finish nor be cancelled.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(240)

GROW = """
id: grow-{n}
steps:
  - id: grow
    node: core.transform@1
    with: {{value: "{{{{ 'a' | center(1000000000) }}}}"}}
"""

SPIN = """
id: spin-{n}
steps:
  - id: spin
    node: core.transform@1
    with:
      value: >-
        {{% for a in range(100000) %}}{{% for b in range(100000) %}}x{{% endfor %}}{{%
        endfor %}}
"""

NORMAL = """
id: after-{n}
steps:
  - id: fine
    node: core.transform@1
    with: {{value: "{{{{ 'a' | center(5) }}}}|{{% for i in range(3) %}}{{{{ i }}}}{{% endfor %}}"}}
"""


@pytest.mark.parametrize(
    ("flow", "step", "limit"),
    [
        (GROW, "grow", "REFLUX_EXPRESSION_MAX_BYTES"),
        (SPIN, "spin", "REFLUX_EXPRESSION_MAX_ITERATIONS"),
    ],
)
def test_a_template_over_its_limit_fails_the_step_and_the_worker_stays_well(
    stack: RunningStack, flow: str, step: str, limit: str
):
    n = time.monotonic_ns()
    path = stack.write(f"limits-{n}.yaml", flow.format(n=n))
    started = time.monotonic()
    checked = stack.cli("validate", str(path), timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    result = stack.run(flow.format(n=n), timeout=60)
    assert time.monotonic() - started < 60
    assert result.status == "failed", result
    failed = result.steps[step]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.class_ == "ExpressionError"
    assert limit in failed.error.message and "\n" not in failed.error.message

    after = stack.run(NORMAL.format(n=n), timeout=60)
    assert after.status == "completed", after
    assert after.steps["fine"].output == {"value": "  a  |012"}
