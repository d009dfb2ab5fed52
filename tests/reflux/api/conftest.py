from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually

ORDER_FLOW = """
id: {id}
inputs:
  order: {{type: integer, required: true}}
steps:
  - id: echo
    node: core.transform@1
    with: {{value: "{{{{ inputs.order }}}}"}}
outputs:
  order: "{{{{ steps.echo.output.value }}}}"
triggers:
"""
"""A workflow that echoes its `order` input, for trigger tests: a format string (`id`), to
which each test appends its triggers."""


def make_token(stack: RunningStack, role: str, namespace: str | None = None) -> str:
    args = ["tokens", "create", "--role", role, "--name", f"test-{role}"]
    if namespace:
        args += ["--namespace", namespace]
    done = stack.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def tokens(stack: RunningStack) -> dict[str, str]:
    """One token per role, for every namespace."""
    return {role: make_token(stack, role) for role in ("viewer", "author", "reviewer", "admin")}


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ended(run: dict[str, Any]) -> bool:
    return run["status"] != "running"


def poll_run(
    api: httpx.Client,
    tokens: dict[str, str],
    run_id: str,
    until: Callable[[dict[str, Any]], bool] = ended,
    timeout: float = 60,
) -> dict[str, Any]:
    """GET /runs/<run_id> (as the viewer) until `until` holds of it, or `timeout` seconds
    have passed: its last answer (the caller's assertions on it say what was not reached)."""

    def fetch() -> dict[str, Any]:
        return dict(api.get(f"/runs/{run_id}", headers=auth(tokens["viewer"])).json())

    def reached() -> dict[str, Any] | None:
        run = fetch()
        return run if until(run) else None

    try:
        return eventually(reached, timeout=timeout, every=0.1, what=f"run {run_id}")
    except AssertionError:
        return fetch()
