"""Variant runs from the command line: a stored version run with `--set`, `--pin` and
`--label`, validated as a push is; labels on the ledger; nothing stored changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from infra import pool_for
from registry import get_run
from tests.helpers.stack import RunningStack
from tests.helpers.waiting import eventually
from tests.support.variant_nodes import CATALOG

pytestmark = pytest.mark.timeout(240)

FLOW = """\
id: {id}
# the author's comment
steps:
  - id: fetch
    node: core.transform@1
    with: {{value: [5, 4, 3, 2, 1]}}
  - id: rank
    node: test.ranker@0.1.0  # a draft, pinned exactly
    with:
      items: "{{{{ steps.fetch.output.value }}}}"
      k: 2
outputs:
  rank: "{{{{ steps.rank.output }}}}"
"""


@pytest.fixture(scope="module")
def drafts(stack: RunningStack) -> Iterator[RunningStack]:
    service = stack.spawn("nodes", "serve", "--catalog", CATALOG, "--groups", "drafts")
    try:
        eventually(lambda: served(stack) == 2, timeout=60, what="test.ranker served")
        yield stack
    finally:
        service.terminate()
        service.wait(timeout=30)


def served(stack: RunningStack) -> int:
    rows = json.loads(ok(stack, "nodes", "list", "--json"))
    return sum(1 for r in rows if r["name"] == "test.ranker" and r["replicas"] > 0)


def ok(stack: RunningStack, *args: str) -> str:
    done = stack.cli(*args)
    assert done.returncode == 0, f"reflux {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def push(stack: RunningStack, workflow_id: str) -> None:
    ok(
        stack,
        "workflows",
        "push",
        str(stack.write(f"{workflow_id}.yaml", FLOW.format(id=workflow_id))),
    )


def ledger(stack: RunningStack, run_id: str):
    async def read():
        async with pool_for(stack.settings) as pool:
            return await get_run(pool, run_id)

    return asyncio.run(read())


def test_a_variant_run_changes_params_pins_a_draft_and_is_labelled(drafts: RunningStack):
    push(drafts, "variant-flow")
    done = drafts.cli(
        "run", "variant-flow", "--json",
        "--set", "rank.with.k=3", "--set", "fetch.retry.max_attempts=5",
        "--pin", "rank=test.ranker@0.2.0",
        "--label", "experiment=try1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    assert result["outputs"]["rank"] == {"top": [5, 4, 3], "version": "0.2.0"}
    record = ledger(drafts, result["run_id"])
    assert record.labels == {"experiment": "try1"}
    assert record.workflow_version == 1
    assert record.pins["rank"] == {"node": "test.ranker", "version": "0.2.0"}
    # the stored workflow did not change
    stored = ok(drafts, "workflows", "show", "variant-flow")
    assert "test.ranker@0.1.0" in stored and "k: 2" in stored


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "nope.with.k=1"], "no step 'nope'"),
        (["--set", "rank.with"], "--set"),
        (["--set", 'fetch.with.value="{{ steps.rank.output }}"'], "cycle"),
        (["--pin", "rank=test.ranker@9.9.9"], "test.ranker"),
        (["--label", "shadow=true"], "set by the engine"),
        (["--label", "Bad Key=1"], "--label"),
    ],
)
def test_a_bad_variant_is_one_line_and_exit_2(drafts: RunningStack, args, message):
    push(drafts, "variant-bad")
    done = drafts.cli("run", "variant-bad", *args)
    assert done.returncode == 2, done.stderr + done.stdout
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
