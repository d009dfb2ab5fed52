"""`reflux workflows mutate`: a stored version with graph mutations applied becomes the
next version; its YAML keeps the author's comments, the diff is the changed lines only,
and a mutation that breaks the graph stores nothing."""

from __future__ import annotations

import json

from tests.helpers.stack import RunningStack

FLOW = """\
id: mutate-me
# fetch talks to a flaky service
steps:
  - id: fetch
    node: core.transform@1
    with: {value: 1}   # keep this comment
  - id: use
    node: core.transform@1
    with:
      value: "{{ steps.fetch.output.value }}"
"""


def cli(stack: RunningStack, *args: str) -> dict:
    done = stack.cli(*args)
    assert done.returncode == 0, f"reflux {' '.join(args)}: {done.stderr}{done.stdout}"
    return json.loads(done.stdout) if "--json" in args else {"out": done.stdout}


def test_mutate_keeps_comments_and_diffs_only_what_changed(stack: RunningStack):
    cli(stack, "workflows", "push", str(stack.write("mutate-me.yaml", FLOW)))
    mutation = '[{"op": "set_policy", "step": "fetch", "retry": {"max_attempts": 5}}]'
    done = cli(stack, "workflows", "mutate", "mutate-me", "--mutation", mutation, "--json")
    assert (done["base"], done["version"], done["created"], done["live"]) == (1, 2, True, True)
    changed = [
        line for line in done["diff"].splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]  # fmt: skip
    assert changed == ["+    retry: {max_attempts: 5}"], done["diff"]
    stored = cli(stack, "workflows", "show", "mutate-me@2")["out"]
    assert "# fetch talks to a flaky service" in stored and "# keep this comment" in stored

    # a candidate: stored, not live
    done = cli(stack, "workflows", "mutate", "mutate-me", "--set", "use.with.extra=2",
               "--candidate", "--json")  # fmt: skip
    assert (done["version"], done["candidate"], done["live"]) == (3, True, False)
    versions = cli(stack, "workflows", "versions", "mutate-me", "--json")
    live = [v["version"] for v in (versions if isinstance(versions, list) else versions["versions"])
            if v.get("live")]  # fmt: skip
    assert live == [2]


def test_a_mutation_that_breaks_the_graph_stores_nothing(stack: RunningStack):
    source = FLOW.replace("mutate-me", "mutate-me-2")
    cli(stack, "workflows", "push", str(stack.write("mutate-me-2.yaml", source)))
    for mutation, expected in [
        ('[{"op": "remove_step", "step": "fetch"}]', "fetch"),
        ('[{"op": "update_params", "step": "fetch",'
         ' "params": {"value": "{{ steps.use.output }}"}}]',
         "mutate-me-2@1 mutated:6:"),  # the line in the text that would be stored
        ('[{"op": "set_policy", "step": "ghost", "timeout": "5s"}]', "ghost"),
        ("not json", "mutation"),
    ]:  # fmt: skip
        done = stack.cli("workflows", "mutate", "mutate-me-2", "--mutation", mutation)
        assert done.returncode == 2, done.stderr + done.stdout
        assert expected in done.stdout + done.stderr
    done = stack.cli("workflows", "mutate", "mutate-me-2")
    assert done.returncode == 2 and "nothing to change" in done.stderr
    versions = cli(stack, "workflows", "versions", "mutate-me-2", "--json")
    rows = versions if isinstance(versions, list) else versions["versions"]
    assert [v["version"] for v in rows] == [1]
