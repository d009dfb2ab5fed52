"""Runs started from a `RunRequest` a test shapes itself (a limit lowered, a plan that
validation would refuse), on the stack's own worker, as `submit` starts them otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle

from infra.database import pool_for
from orchestrator.plan import RunRequest, RunResult
from orchestrator.runs import connect_temporal, prepare_run, start_run, wait_run
from orchestrator.validate import parse_spec
from registry.nodes import NodeRegistry
from tests.helpers.stack import RunningStack

Change = Callable[[RunRequest], None]


async def start_request(
    stack: RunningStack,
    text: str,
    inputs: dict[str, Any] | None = None,
    change: Change | None = None,
) -> tuple[Client, WorkflowHandle]:
    """Validate `text`, prepare its run (pins, ledger row), let `change` edit the request,
    then start it. Returns the client and the run's handle."""
    settings = stack.settings
    async with pool_for(settings) as pool:
        catalog = await NodeRegistry(pool, settings.user).catalog()
        spec = parse_spec(text, catalog=catalog)
        request = await prepare_run(pool, settings, spec, catalog, spec.bind_inputs(inputs))
    if change is not None:
        change(request)
    client = await connect_temporal(settings)
    return client, await start_run(client, request, settings.temporal.task_queue)


async def run_request(
    stack: RunningStack,
    text: str,
    inputs: dict[str, Any] | None = None,
    change: Change | None = None,
    timeout: float = 60,
) -> tuple[Client, RunResult]:
    """`start_request`, then its result; AssertionError when it has not ended in `timeout`
    seconds (a wedged run retries its workflow task forever)."""
    client, handle = await start_request(stack, text, inputs, change)
    try:
        return client, await asyncio.wait_for(wait_run(handle), timeout)
    except TimeoutError:
        await handle.terminate("the test gave up on it")
        raise AssertionError(f"run {handle.id} did not end within {timeout}s") from None
