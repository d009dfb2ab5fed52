"""code.python@1 and code.shell@1: in workflows on the real stack (worker, NATS, the `code`
node service, the process sandbox), and their handlers directly."""

from __future__ import annotations

import pytest

from infra.errors import CodeRunError, ValidationError
from infra.settings import SandboxSettings, Settings
from nodes.builtin import code
from nodes.sdk import NodeContext
from tests.helpers.stack import RunningStack

CTX = NodeContext(settings=Settings(sandbox=SandboxSettings()))


def test_code_steps_feed_each_other(stack: RunningStack) -> None:
    result = stack.run(
        """
        id: code-steps
        inputs:
          values: {type: array}
        steps:
          - id: stats
            node: code.python@1
            with:
              code: |
                import statistics
                def run(inputs):
                    return {"mean": statistics.mean(inputs["values"]), "n": len(inputs["values"])}
              inputs: {values: "{{ inputs.values }}"}
              limits: {timeout: 5s, memory_mb: 256, network: off}
          - id: report
            node: code.shell@1
            with:
              code: 'printf "n=%s " "$(cat "$REFLUX_INPUTS_FILE")"; echo mean={{ steps.stats.output.mean }}'
              inputs: "{{ steps.stats.output.n }}"
        outputs:
          mean: "{{ steps.stats.output.mean }}"
          line: "{{ steps.report.output.stdout }}"
        """,  # noqa: E501
        inputs={"values": [2, 4, 9]},
    )
    assert result.status == "completed", result.error
    assert result.outputs == {"mean": 5, "line": "n=3 mean=5\n"}
    assert result.steps["report"].output["exit_code"] == 0


def test_failing_code_fails_the_step_once_with_its_reason(stack: RunningStack) -> None:
    result = stack.run(
        """
        id: code-fails
        steps:
          - id: boom
            node: code.python@1
            retry: {max_attempts: 3, initial_interval: 100ms}
            with:
              code: |
                def run(inputs):
                    print("working on it")
                    raise ValueError("no such customer")
        """
    )
    assert result.status == "failed"
    step = result.steps["boom"]
    assert step.attempts == 1  # not retried: the same code fails the same way
    assert step.error is not None and step.error.class_ == "CodeRunError"
    assert step.error.message == "code.python: error: ValueError: no such customer (line 3)"
    assert step.error.details["stdout"] == "working on it\n"


def test_sandbox_limits_apply_to_steps(stack: RunningStack) -> None:
    result = stack.run(
        """
        id: code-timeout
        steps:
          - id: slow
            node: code.python@1
            with:
              code: "import time\\ndef run(inputs):\\n    time.sleep(30)"
              limits: {timeout: 500ms}
        """
    )
    assert result.status == "failed"
    error = result.steps["slow"].error
    assert error is not None and error.details["status"] == "timeout"
    assert error.message == "code.python: timeout: timed out after 0.5s (wall clock); killed"


async def test_shell_check_false_returns_a_failing_exit_status() -> None:
    params = code.ShellParams(code="echo out; echo err >&2; exit 7", check=False)
    output = await code.shell(params, CTX)
    assert output.model_dump() == {
        "stdout": "out\n",
        "stderr": "err\n",
        "exit_code": 7,
        "truncated": False,
    }
    with pytest.raises(CodeRunError, match="exited with status 7: err"):
        await code.shell(code.ShellParams(code="echo err >&2; exit 7"), CTX)


async def test_the_host_network_is_off_unless_the_platform_allows_it() -> None:
    # network: full shares the host's loopback (NATS, PostgreSQL): a tenant's code could
    # talk to node services directly. Only an operator may turn it on.
    params = code.PythonParams(code="def run(inputs):\n    return 1", limits={"network": "full"})
    with pytest.raises(ValidationError, match="REFLUX_SANDBOX_ALLOW_FULL_NETWORK"):
        await code.python(params, CTX)
    allowed = NodeContext(settings=Settings(sandbox=SandboxSettings(allow_full_network=True)))
    assert (await code.python(params, allowed)).root == 1


def test_limits_are_validated_with_their_names() -> None:
    with pytest.raises(ValueError, match="timeout"):
        code.PythonParams(code="", limits={"timeout": "soon"})
    with pytest.raises(ValueError, match="memory_mb"):
        code.PythonParams(code="", limits={"memory_mb": 1})
    with pytest.raises(ValueError, match="network"):
        code.PythonParams(code="", limits={"network": "some"})
    assert code.PythonParams(code="", limits={"network": False}).limits.network == "off"
