"""`cache: {ttl: …}` end to end: a repeat with the same node version and params is answered
from the cache without a node call and traced as a hit; `reflux cache clear` forgets;
steps reading secrets are cached only with `allow_secrets`."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.helpers.stack import RunningStack
from tests.helpers.waiting import wait_for
from tests.support.nodes import events

pytestmark = pytest.mark.timeout(180)

FLOW = """
id: cached
steps:
  - id: slow
    node: test.sleep@1
    cache: {{ttl: 10m{extra}}}
    with: {{label: "{label}", record_dir: "{dir}"{secret}}}
"""


def calls(directory) -> int:
    return len(events(directory))


def test_a_repeat_is_answered_from_the_cache(stack: RunningStack, tmp_path):
    flow = FLOW.format(label=uuid.uuid4().hex, dir=tmp_path, extra="", secret="")
    first = stack.run(flow)
    second = stack.run(flow)
    assert first.status == second.status == "completed"
    assert calls(tmp_path) == 1  # the second run made no node call
    assert second.steps["slow"].cache_hits == 1 and first.steps["slow"].cache_hits == 0
    assert second.steps["slow"].output == first.steps["slow"].output

    def traced() -> list[dict]:  # as a user reads them: through the sink, from ClickHouse
        done = stack.cli("traces", second.run_id)
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []

    events = wait_for(traced, timeout=60, what="the cache hit's trace")
    assert [(e["status"], e["cache_hit"]) for e in events] == [("ok", True)]

    other = stack.cli("cache", "clear", "--node", "core.transform")
    assert other.returncode == 0, other.stderr
    stack.run(flow)
    assert calls(tmp_path) == 1  # clearing another node's results changed nothing here
    done = stack.cli("cache", "clear", "--node", "test.sleep")
    assert done.returncode == 0 and done.stdout.startswith("removed "), done.stderr
    assert "removed 0 " not in done.stdout
    stack.run(flow)
    assert calls(tmp_path) == 2  # forgotten: the node ran again


def test_steps_reading_secrets_are_cached_only_when_allowed(stack: RunningStack, tmp_path):
    secret = ", token: \"{{ secret('API_TOKEN') }}\""
    plain = FLOW.format(label=uuid.uuid4().hex, dir=tmp_path / "a", extra="", secret=secret)
    stack.run(plain)
    stack.run(plain)
    assert calls(tmp_path / "a") == 2
    allowed = FLOW.format(
        label=uuid.uuid4().hex, dir=tmp_path / "b", extra=", allow_secrets: true", secret=secret
    )
    stack.run(allowed)
    stack.run(allowed)
    assert calls(tmp_path / "b") == 1
