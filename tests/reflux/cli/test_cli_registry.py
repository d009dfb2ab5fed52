"""The registry commands as a user runs them: `reflux workflows …`, `reflux run ID[@N]`,
`reflux nodes show|search`, against the embedded stack and against an external PostgreSQL
given by URL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from infra.database import pool_for
from infra.stack import addresses
from registry.runs import get_run
from tests.helpers.database import create_database, drop_database
from tests.helpers.stack import RunningStack, start_test_stack, stop_test_stack

pytestmark = pytest.mark.timeout(240)

V1 = """\
# the first version
id: {id}
steps:
  - id: greet
    node: core.transform@1
    with: {{value: "v1 {{{{ inputs.name }}}}"}}
inputs:
  name: {{type: string, default: Ada}}
outputs:
  said: "{{{{ steps.greet.output.value }}}}"
"""


def ok(stack: RunningStack, *args: str) -> str:
    done = stack.cli(*args)
    assert done.returncode == 0, f"reflux {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def versions_of(stack: RunningStack, flow: str) -> list[int]:
    return [v["version"] for v in json.loads(ok(stack, "workflows", "versions", flow, "--json"))]


def test_push_makes_a_version_only_when_the_content_changes(stack: RunningStack):
    path = stack.write("versioned.yaml", V1.format(id="versioned"))
    assert ok(stack, "workflows", "push", str(path)).strip() == f"{path}: stored as versioned@1"
    assert "unchanged (versioned@1)" in ok(stack, "workflows", "push", str(path))
    path.write_text(path.read_text().replace("# the first version", "# same, reworded"))
    assert "unchanged (versioned@1)" in ok(stack, "workflows", "push", str(path))
    path.write_text(V1.format(id="versioned").replace("v1 ", "v2 "))
    assert "stored as versioned@2" in ok(stack, "workflows", "push", str(path))
    assert versions_of(stack, "versioned") == [1, 2]

    listed = {w["id"]: w for w in json.loads(ok(stack, "workflows", "list", "--json"))}
    assert listed["versioned"]["latest_version"] == 2
    assert ok(stack, "workflows", "show", "versioned@1") == V1.format(id="versioned")
    assert "v2 " in ok(stack, "workflows", "show", "versioned")
    diff = ok(stack, "workflows", "diff", "versioned", "1", "2")
    assert "--- versioned@1" in diff and "+++ versioned@2" in diff
    assert '-    with: {value: "v1' in diff and '+    with: {value: "v2' in diff


def test_run_a_stored_version_by_id(stack: RunningStack):
    path = stack.write("by-id.yaml", V1.format(id="by-id"))
    ok(stack, "workflows", "push", str(path))
    path.write_text(V1.format(id="by-id").replace("v1 ", "v2 "))
    ok(stack, "workflows", "push", str(path))

    latest = json.loads(ok(stack, "run", "by-id", "--json", "--input", '{"name": "Bo"}'))
    assert latest["outputs"] == {"said": "v2 Bo"}
    first = json.loads(ok(stack, "run", "by-id@1", "--json"))
    assert first["outputs"] == {"said": "v1 Ada"}

    async def ledger() -> tuple[int | None, int | None]:
        async with pool_for(stack.settings) as pool:
            a, b = await get_run(pool, latest["run_id"]), await get_run(pool, first["run_id"])
            return a.workflow_version, b.workflow_version

    assert asyncio.run(ledger()) == (2, 1)


def test_unknown_workflows_and_versions_say_what_exists(stack: RunningStack):
    ok(stack, "workflows", "push", str(stack.write("order-sync.yaml", V1.format(id="order-sync"))))
    done = stack.cli("workflows", "show", "order-synk")
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "reflux: unknown workflow 'order-synk'; did you mean 'order-sync'?"
    )
    done = stack.cli("run", "order-sync@7")
    assert done.returncode == 1 and "order-sync has no version 7 (versions 1 to 1)" in done.stderr
    done = stack.cli("run", "no-such-flow")
    assert done.returncode == 1 and "unknown workflow 'no-such-flow'" in done.stderr


def test_push_refuses_an_invalid_file_with_where(stack: RunningStack):
    bad = stack.write(
        "bad-push.yaml", "id: bad-push\nsteps:\n  - id: a\n    node: core.transfrom@1\n"
    )
    done = stack.cli("workflows", "push", str(bad))
    assert done.returncode == 2
    assert f"{bad}:4:11: steps[0].node: unknown node 'core.transfrom'" in done.stdout
    assert stack.cli("workflows", "versions", "bad-push").returncode == 1  # nothing stored


def test_nodes_show_and_search(stack: RunningStack):
    shown = ok(stack, "nodes", "show", "http.request")
    assert "production" in shown and "manifest of 1.1.0:" in shown
    assert "url: string (required)" in shown
    assert "1 (http)" in shown  # served now by one replica of the http group
    assert "registered as production" in shown

    found = ok(stack, "nodes", "search", "http").splitlines()
    assert found[1].startswith("http.request")
    assert "core.transform" in ok(stack, "nodes", "search", "transfrom")  # a typo still finds it
    assert "no node matches" in ok(stack, "nodes", "search", "zzqqxx")

    done = stack.cli("nodes", "show", "htp.request")
    assert done.returncode == 1 and "did you mean 'http.request'?" in done.stderr
    done = stack.cli("nodes", "promote", "core.transform", "9.9.9", "--to", "staging")
    assert done.returncode == 1
    assert "core.transform has no version 9.9.9 (known: 1.1.0)" in done.stderr
    done = stack.cli("nodes", "promote", "core.transform", "1.1.0", "--to", "staging")
    assert done.returncode == 1 and "never move back to staging" in done.stderr


@pytest.fixture(scope="module")
def external_db_stack(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """A second stack whose PostgreSQL is external: a database on the session's server,
    given by REFLUX_DATABASE_URL, that `reflux up` must use (and migrate), not start."""
    url = asyncio.run(create_database(addresses(stack.settings).database))
    try:
        running = start_test_stack(tmp_path_factory.mktemp("ext-db"), REFLUX_DATABASE_URL=url)
        try:
            yield running
        finally:
            stop_test_stack(running)
    finally:
        asyncio.run(drop_database(url))


def test_every_command_works_against_an_external_database(external_db_stack: RunningStack):
    stack = external_db_stack
    status = ok(stack, "status")
    assert "postgres" in status and "external" in status
    assert "0001_registry.sql" in ok(stack, "db", "status")
    assert "schema up to date" in ok(stack, "db", "migrate")

    listed = {
        (r["name"], r["version"]): r for r in json.loads(ok(stack, "nodes", "list", "--json"))
    }
    assert listed[("core.transform", "1.1.0")]["status"] == "production"
    assert listed[("test.echo", "2.0.0")]["status"] == "production"  # promoted by the fixture
    assert "test.echo" in ok(stack, "nodes", "search", "echo")

    path = stack.write("ext.yaml", V1.format(id="ext"))
    ok(stack, "workflows", "push", str(path))
    assert "ext" in ok(stack, "workflows", "list")
    assert ok(stack, "workflows", "show", "ext@1") == V1.format(id="ext")
    result = json.loads(ok(stack, "run", "ext", "--json"))
    assert result["outputs"] == {"said": "v1 Ada"}
    path.write_text(V1.format(id="ext").replace("v1 ", "v2 "))
    assert "stored as ext@2" in ok(stack, "workflows", "push", str(path))
    assert versions_of(stack, "ext") == [1, 2]
    assert "+++ ext@2" in ok(stack, "workflows", "diff", "ext", "1", "2")

    assert "test.echo@1.0.0: production -> deprecated" in ok(
        stack, "nodes", "deprecate", "test.echo", "1.0.0"
    )
    ok(stack, "nodes", "rollout", "test.echo", "1.1.0", "--percent", "20")
    shown = ok(stack, "nodes", "show", "test.echo")
    assert "production -> deprecated" in shown and "1.1.0 takes 20% of new runs" in shown
    assert "deprecated -> production" in ok(
        stack, "nodes", "promote", "test.echo", "1.0.0", "--to", "production", "--force"
    )

    async def ledger() -> str:
        async with pool_for(stack.settings) as pool:
            return (await get_run(pool, result["run_id"])).status

    assert asyncio.run(ledger()) == "completed"  # the worker recorded the end there too
