"""`prepare_run` is the last line of defence on input shape: inputs nested too deeply or too
large are refused in one line before any run is recorded, whatever the entry point."""

from __future__ import annotations

import asyncio

import pytest

from infra.database import pool_for
from infra.errors import InputShapeError, NotFoundError
from orchestrator.runs import prepare_run
from orchestrator.validate import parse_spec
from registry import runs as ledger
from registry.nodes import NodeRegistry
from tests.helpers.stack import RunningStack

SPEC = parse_spec(
    """
id: shapes
inputs:
  data: {type: any}
steps:
  - {id: echo, node: core.transform@1, with: {value: "{{ inputs.data }}"}}
"""
)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def refused(stack: RunningStack, inputs: dict) -> tuple[str, list]:
    settings = stack.settings
    async with pool_for(settings) as pool:
        catalog = await NodeRegistry(pool, settings.user).catalog()
        with pytest.raises(InputShapeError) as raised:
            await prepare_run(pool, settings, SPEC, catalog, inputs, run_id="shapes-refused")
        with pytest.raises(NotFoundError):
            await ledger.get_run(pool, "shapes-refused")
        listed = await ledger.list_runs(pool, workflow_id="shapes")
        return str(raised.value), listed


def test_inputs_nested_too_deeply_are_refused_before_a_run_is_recorded(stack: RunningStack):
    depth = stack.settings.limits.input_max_depth
    message, listed = asyncio.run(refused(stack, {"data": nested(depth + 50)}))
    assert message == f"inputs: nested deeper than {depth} levels (REFLUX_INPUT_MAX_DEPTH)"
    assert listed == []


def test_inputs_too_large_are_refused_before_a_run_is_recorded(stack: RunningStack):
    limit = stack.settings.limits.input_max_bytes
    message, listed = asyncio.run(refused(stack, {"data": "x" * (limit + 1)}))
    assert message.startswith("inputs: ") and "REFLUX_INPUT_MAX_BYTES" in message
    assert listed == []
