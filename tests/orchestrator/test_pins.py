"""Node versions are pinned from the registry when a run starts, recorded on the run, and
kept for the whole run; lifecycle changes and rollouts only affect runs started after them.

The `staged` test group (test.pick 1.0.0 and 1.1.0) is served by a service this module
starts: its versions register as drafts, and the tests move them through the lifecycle with
the CLI, as a reviewer would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from infra.database import pool_for
from orchestrator.plan import RunResult
from orchestrator.runs import connect_temporal, run_handle, wait_run
from registry.runs import get_run
from tests.helpers.stack import TEST_CATALOG, RunningStack
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

FLOW = """
id: pick
steps:
  - id: first
    node: test.sleep@1
    with: {{seconds: {seconds}}}
  - id: pick
    node: test.pick{spec}
    needs: [first]
    with: {{value: 1}}
"""


@pytest.fixture(scope="module")
def staged(stack: RunningStack) -> Iterator[RunningStack]:
    service = stack.spawn("nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "staged")
    try:
        wait_for(lambda: "test.pick" in stack.cli("nodes", "list").stdout, what="registration")
        wait_for(lambda: served(stack, "test.pick") == 2, what="two versions served")
        for to in ("staging", "production"):
            ok(stack, "nodes", "promote", "test.pick", "1.0.0", "--to", to)
        ok(stack, "nodes", "promote", "test.pick", "1.1.0", "--to", "staging")
        yield stack
    finally:
        service.terminate()
        service.wait(timeout=30)


def served(stack: RunningStack, name: str) -> int:
    rows = json.loads(ok(stack, "nodes", "list", "--json"))
    return sum(1 for r in rows if r["name"] == name and r["replicas"] > 0)


def ok(stack: RunningStack, *args: str) -> str:
    done = stack.cli(*args)
    assert done.returncode == 0, f"reflux {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def ledger_pins(stack: RunningStack, run_id: str) -> dict:
    async def read() -> dict:
        async with pool_for(stack.settings) as pool:
            return (await get_run(pool, run_id)).pins

    return asyncio.run(read())


def test_pins_follow_the_lifecycle_and_hold_for_a_whole_run(staged: RunningStack):
    # One test, in phases: the lifecycle only moves forward, so phases cannot be reordered.
    rows = json.loads(ok(staged, "nodes", "list", "--json"))
    listing = {(r["name"], r["version"]): r for r in rows}
    assert listing[("test.pick", "1.1.0")]["status"] == "staging"
    assert listing[("core.transform", "1.1.0")]["status"] == "production"  # built-in

    # Staging is reached by an exact pin only; `@1` is the newest production 1.x.
    result = staged.run(FLOW.format(seconds=0, spec="@1"))
    assert result.status == "completed", result.error
    assert result.steps["pick"].output["version"] == "1.0.0"
    exact = staged.run(FLOW.format(seconds=0, spec="@1.1.0"))
    assert exact.steps["pick"].output["version"] == "1.1.0"
    assert ledger_pins(staged, exact.run_id)["pick"] == {"node": "test.pick", "version": "1.1.0"}

    # A promotion while a run is going changes new runs only.
    path = staged.write("pick-slow.yaml", FLOW.format(seconds=3, spec="@1"))
    started = staged.cli("run", str(path), "--no-wait")
    assert started.returncode == 0, started.stderr
    slow_run = started.stdout.strip()
    assert ledger_pins(staged, slow_run)["pick"]["version"] == "1.0.0"
    ok(staged, "nodes", "promote", "test.pick", "1.1.0", "--to", "production")
    after = staged.run(FLOW.format(seconds=0, spec="@1"))
    assert after.steps["pick"].output["version"] == "1.1.0"
    slow = asyncio.run(finish(staged, slow_run))
    assert slow.status == "completed", slow.error
    assert slow.steps["pick"].output["version"] == "1.0.0"
    assert ledger_pins(staged, slow_run)["pick"]["version"] == "1.0.0"

    # A deprecated version is refused for new runs, naming the replacement.
    ok(staged, "nodes", "deprecate", "test.pick", "1.0.0", "--note", "superseded")
    old = staged.write("pick-old.yaml", FLOW.format(seconds=0, spec="@1.0.0"))
    refused = staged.cli("run", str(old))
    assert refused.returncode == 2
    assert "test.pick@1.0.0 is deprecated; use test.pick@1.1.0" in refused.stderr

    # Back to production only with --force; then a rollout at 100 % takes every matching run.
    refused = staged.cli("nodes", "promote", "test.pick", "1.0.0", "--to", "production")
    assert refused.returncode == 1 and "--force" in refused.stderr
    ok(staged, "nodes", "promote", "test.pick", "1.0.0", "--to", "production", "--force")
    ok(staged, "nodes", "rollout", "test.pick", "1.0.0", "--percent", "100")
    rolled = staged.run(FLOW.format(seconds=0, spec="@1"))
    assert rolled.steps["pick"].output["version"] == "1.0.0"
    assert ledger_pins(staged, rolled.run_id)["pick"]["version"] == "1.0.0"
    assert "rollout stopped" in ok(
        staged, "nodes", "rollout", "test.pick", "1.0.0", "--percent", "0"
    )
    back = staged.run(FLOW.format(seconds=0, spec="@1"))
    assert back.steps["pick"].output["version"] == "1.1.0"

    shown = ok(staged, "nodes", "show", "test.pick")
    for fragment in ("superseded", "rollout 100%", "production -> deprecated", "by "):
        assert fragment in shown, shown


async def finish(stack: RunningStack, run_id: str) -> RunResult:
    client = await connect_temporal(stack.settings)
    return await wait_run(run_handle(client, run_id))
