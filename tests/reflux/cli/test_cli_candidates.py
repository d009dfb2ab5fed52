"""`reflux workflows push --candidate | promote | rollout | versions` as a user runs them,
against the embedded stack and through the HTTP API."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import make_token
from tests.reflux.api.test_cron import schedule_exists
from tests.reflux.cli.test_cli_remote import remote_cli

pytestmark = pytest.mark.timeout(240)

FLOW = """\
id: {id}
steps:
  - id: greet
    node: core.transform@1
    with: {{value: "{greeting} {{{{ inputs.name }}}}"}}
inputs:
  name: {{type: string, default: Ada}}
outputs:
  said: "{{{{ steps.greet.output.value }}}}"
{triggers}"""
# an interval no test waits for: the Schedule exists, it never fires while the test runs
HOURLY = """triggers:
  - type: cron
    id: hourly
    every: 1h
"""


def ok(cli, *args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, f"reflux {' '.join(args)}: {done.stderr}{done.stdout}"
    return str(done.stdout)


def states(cli, workflow_id: str) -> list[tuple[int, bool, bool, int | None]]:
    listed = json.loads(ok(cli, "workflows", "versions", workflow_id, "--json"))
    return [(v["version"], v["live"], v["candidate"], v["rollout"]) for v in listed]


def said(cli, workflow_id: str) -> str:
    return str(json.loads(ok(cli, "run", workflow_id, "--json"))["outputs"]["said"])


def test_a_candidate_waits_beside_the_live_version(stack: RunningStack):
    cli = stack.cli
    workflow_id = f"cand-{uuid.uuid4().hex[:8]}"
    sid = f"reflux-cron.{workflow_id}.hourly"
    path = stack.write(f"{workflow_id}.yaml", FLOW.format(id=workflow_id, greeting="v1",
                                                           triggers=""))  # fmt: skip
    assert ok(cli, "workflows", "push", str(path)).strip() == f"{path}: stored as {workflow_id}@1"

    path.write_text(FLOW.format(id=workflow_id, greeting="v2", triggers=HOURLY))
    pushed = ok(cli, "workflows", "push", str(path), "--candidate")
    assert pushed.splitlines() == [  # no schedule line: a candidate's triggers wait
        f"{path}: stored as {workflow_id}@2, a candidate: not live, its triggers wait"
        f" (`reflux workflows promote {workflow_id} 2`)"
    ]
    assert not schedule_exists(stack, sid)
    assert states(cli, workflow_id) == [(1, True, False, None), (2, False, True, None)]
    assert said(cli, workflow_id) == "v1 Ada"  # `reflux run ID` runs the live version
    assert "v1 " in ok(cli, "workflows", "show", workflow_id)
    again = ok(cli, "workflows", "push", str(path), "--candidate")
    assert again.strip() == f"{path}: unchanged ({workflow_id}@2), a candidate"

    table = ok(cli, "workflows", "versions", workflow_id).splitlines()
    header = ["VERSION", "STATE", "ROLLOUT", "CREATED", "BY", "SPEC", "HASH", "NOTE"]
    assert table[0].split() == header
    assert [row.split()[:3] for row in table[1:]] == [["1", "live", "-"], ["2", "candidate", "-"]]

    rolled = ok(cli, "workflows", "rollout", workflow_id, "2", "--percent", "30")
    assert rolled.strip() == f"{workflow_id}@2: takes 30% of new runs"
    changed = ok(cli, "workflows", "rollout", workflow_id, "2", "--percent", "40")
    assert changed.strip() == f"{workflow_id}@2: takes 40% of new runs (was 30%)"
    assert states(cli, workflow_id)[1] == (2, False, True, 40)
    table = ok(cli, "workflows", "versions", workflow_id).splitlines()
    assert table[2].split()[:3] == ["2", "candidate", "40%"]

    promoted = ok(cli, "workflows", "promote", workflow_id, "2").splitlines()
    assert promoted == [
        f"{workflow_id}@2: live (was @1); its rollout at 40% ended",
        f"  schedule {sid}: created",
    ]
    assert schedule_exists(stack, sid)
    assert states(cli, workflow_id) == [(1, False, False, None), (2, True, False, None)]
    assert said(cli, workflow_id) == "v2 Ada"
    listed = {w["id"]: w for w in json.loads(ok(cli, "workflows", "list", "--json"))}
    assert (listed[workflow_id]["live_version"], listed[workflow_id]["latest_version"]) == (2, 2)
    same = ok(cli, "workflows", "promote", workflow_id, "2")
    assert same.strip() == f"{workflow_id}@2: already live (nothing changed)"

    back = ok(cli, "workflows", "promote", workflow_id, "1").splitlines()
    assert back == [f"{workflow_id}@1: live (was @2)", f"  schedule {sid}: deleted"]
    assert not schedule_exists(stack, sid)
    ok(cli, "workflows", "rollout", workflow_id, "2", "--percent", "10")
    ended = ok(cli, "workflows", "rollout", workflow_id, "2", "--percent", "0")
    assert ended.strip() == f"{workflow_id}@2: rollout ended; new runs get the live version"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["rollout", "{id}", "2", "--percent", "150"], 2,
         "reflux: --percent must be between 0 and 100, got 150"),
        (["rollout", "{id}", "0", "--percent", "10"], 2,
         "reflux: version must be 1 or more, got 0"),
        (["promote", "{id}", "0"], 2, "reflux: version must be 1 or more, got 0"),
        (["rollout", "{id}", "1", "--percent", "10"], 1,
         "reflux: cannot roll out {id}@1: it is live, it has every run a rollout does not take"
         " (roll out another version, or promote one)"),
        (["rollout", "{id}", "2", "--percent", "0"], 1,
         "reflux: no rollout of {id}@2 to end (none is on)"),
        (["promote", "{id}", "9"], 1, "reflux: workflow {id} has no version 9 (versions 1 to 2)"),
        (["promote", "no-such-flow", "1"], 1, "reflux: unknown workflow 'no-such-flow'"),
    ],
)  # fmt: skip
def test_bad_input_is_2_and_refusals_are_1(stack: RunningStack, args, code, message):
    workflow_id = f"bad-{uuid.uuid4().hex[:8]}"
    path = stack.write(f"{workflow_id}.yaml", FLOW.format(id=workflow_id, greeting="v1",
                                                           triggers=""))  # fmt: skip
    ok(stack.cli, "workflows", "push", str(path))
    path.write_text(FLOW.format(id=workflow_id, greeting="v2", triggers=""))
    ok(stack.cli, "workflows", "push", str(path), "--candidate")
    done = stack.cli("workflows", *(a.format(id=workflow_id) for a in args))
    assert (done.returncode, done.stderr.strip()) == (code, message.format(id=workflow_id))
    assert done.stdout == ""


def test_candidates_through_the_api(stack: RunningStack):
    cli = remote_cli(stack, make_token(stack, "author"))
    workflow_id = f"rcand-{uuid.uuid4().hex[:8]}"
    sid = f"reflux-cron.{workflow_id}.hourly"
    path = stack.write(f"{workflow_id}.yaml", FLOW.format(id=workflow_id, greeting="v1",
                                                           triggers=""))  # fmt: skip
    assert ok(cli, "workflows", "push", str(path)).strip() == f"{path}: stored as {workflow_id}@1"
    path.write_text(FLOW.format(id=workflow_id, greeting="v2", triggers=HOURLY))
    assert "a candidate: not live" in ok(cli, "workflows", "push", str(path), "--candidate")
    assert not schedule_exists(stack, sid)

    assert ok(cli, "workflows", "rollout", workflow_id, "2", "--percent", "5").strip() == (
        f"{workflow_id}@2: takes 5% of new runs"
    )
    table = ok(cli, "workflows", "versions", workflow_id).splitlines()
    assert [row.split()[:3] for row in table[1:]] == [["1", "live", "-"], ["2", "candidate", "5%"]]
    assert states(cli, workflow_id) == [(1, True, False, None), (2, False, True, 5)]

    promoted = ok(cli, "workflows", "promote", workflow_id, "2")
    assert promoted.strip() == f"{workflow_id}@2: live (was @1); its rollout at 5% ended"
    assert schedule_exists(stack, sid)  # the API synced the live version's Schedules
    refused = cli("workflows", "rollout", workflow_id, "2", "--percent", "5")
    assert refused.returncode == 1
    assert f"LifecycleError: cannot roll out {workflow_id}@2: it is live" in refused.stderr
    ok(cli, "workflows", "promote", workflow_id, "1")
    assert not schedule_exists(stack, sid)

    # every change, with who and when, locally and through the API alike
    for reader in (cli, stack.cli):
        history = json.loads(ok(reader, "workflows", "history", workflow_id, "--json"))
        assert [(e["version"], e["action"]) for e in history] == [
            (1, "pushed"), (2, "pushed"), (2, "rollout_started"), (2, "rollout_ended"),
            (2, "promoted"), (1, "promoted"),
        ]  # fmt: skip
        assert all(e["actor"] and e["at"] for e in history)
    assert "rollout_started" in ok(cli, "workflows", "history", workflow_id)
