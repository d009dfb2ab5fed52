"""What a handler measures and costs (`NodeContext.metric`, `.cost`) travels back in its reply,
also when it then fails, onto that attempt's trace, into `reflux stats` and `reflux runs show`.
And one call identity on the wire: a request in the previous release's flat shape is still
served, and a request in the new shape still reads right to a node service of that release."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from pydantic import BaseModel, Field

from infra.settings import Settings
from nodes.protocol import CallIdentity, NodeReply, NodeRequest, exact_subject
from nodes.runtime import call_handler
from nodes.sdk import MAX_METRICS, NodeContext, NodeGroup
from tests.helpers.stack import RunningStack, nats_url, promote_test_nodes
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.timeout(180)

METERED = "tests.support.metered:catalog"


class Figures(BaseModel):
    metrics: dict[str, Any] = Field(default_factory=dict)
    tokens: list[Any] = Field(default_factory=list)
    fail: bool = False


class Done(BaseModel):
    ok: bool = True


group = NodeGroup("figures")


@group.node("t.figures", "1.0.0", params=Figures, output=Done)
async def figures(params: Figures, ctx: NodeContext) -> Done:
    for name, value in params.metrics.items():
        ctx.metric(name, value)
    for tokens in params.tokens:
        ctx.cost(tokens)
    if params.fail:
        raise RuntimeError("after reporting")
    return Done()


def handle(**params: Any) -> NodeReply:
    [node] = group.nodes
    request = NodeRequest(params=params, run_id="r", step_id="s", attempt=2)
    return asyncio.run(call_handler(node, request, Settings()))


def test_the_reply_carries_what_the_handler_reported():
    reply = handle(metrics={"rows": 12, "llm.latency_ms": 3.5}, tokens=[100, 20, 0])
    assert reply.error is None
    assert reply.metrics == {"rows": 12.0, "llm.latency_ms": 3.5}
    assert reply.cost_tokens == 120  # several calls add up
    quiet = handle()
    assert quiet.metrics == {} and quiet.cost_tokens is None  # reported nothing: no cost


def test_a_handler_that_fails_after_reporting_still_reports():
    reply = handle(metrics={"rows": 3}, tokens=[7], fail=True)
    assert reply.error is not None and "after reporting" in reply.error.message
    assert reply.metrics == {"rows": 3.0} and reply.cost_tokens == 7


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"metrics": {"Rows": 1}}, "metric 'Rows': a name is 1-64 of a-z"),
        ({"metrics": {"9lives": 1}}, "metric '9lives'"),
        ({"metrics": {"x" * 65: 1}}, "a name is 1-64"),
        ({"metrics": {"ok": True}}, "metric ok: True is not a number"),
        ({"metrics": {"ok": "1"}}, "metric ok: '1' is not a number"),
        ({"metrics": {"ok": math.inf}}, "metric ok: inf is not a finite number"),
        ({"metrics": {"ok": math.nan}}, "not a finite number"),
        ({"tokens": [-1]}, "cost: tokens must be a whole number >= 0, got -1"),
        ({"tokens": [1.5]}, "got 1.5"),
        ({"tokens": [True]}, "got True"),
        ({"tokens": [2**62, 2**62]}, "more than a trace holds"),
    ],
)
def test_a_bad_figure_is_a_clear_error(params: dict, message: str):
    reply = handle(**params)
    assert reply.error is not None and reply.error.class_ == "ConfigError"
    assert message in reply.error.message and "\n" not in reply.error.message


def test_at_most_max_metrics_names_per_attempt():
    names = {f"m{i}": i for i in range(MAX_METRICS)}
    assert handle(metrics=names).error is None
    assert handle(metrics={**names, "m0": 5}).metrics["m0"] == 5.0  # again: replaced
    reply = handle(metrics={**names, "one_more": 1})
    assert reply.error is not None
    assert f"at most {MAX_METRICS} metrics (nodes.sdk.MAX_METRICS)" in reply.error.message
    assert len(reply.metrics) == MAX_METRICS  # those recorded before still travel


def test_the_context_holds_one_identity():
    identity = CallIdentity(run_id="r", step_id="s", item=4, attempt=3, labels={"arm": "a"})
    ctx = NodeContext(identity)
    assert (ctx.run_id, ctx.step_id, ctx.item, ctx.attempt) == ("r", "s", 4, 3)
    assert ctx.idempotency_key == identity.idempotency_key == "r/s/4/3"
    assert ctx.labels == {"arm": "a"}
    with pytest.raises(AttributeError):
        ctx.identity = CallIdentity()  # type: ignore[misc]
    with pytest.raises(ValueError):
        identity.run_id = "other"  # type: ignore[misc]


OLD_SHAPE = {  # what an activity of the release before sent
    "params": {"rows": 2},
    "params_ref": None,
    "run_id": "old-run",
    "namespace": "acme",
    "workflow_id": "flow",
    "step_id": "meter",
    "item": 1,
    "attempt": 2,
    "idempotency_key": "old-run/meter/1/2",
    "timeout": 5.0,
    "secrets": [],
    "secret_nonce": None,
}


class PreviousNodeRequest(BaseModel):
    """`NodeRequest` as the release before had it, to read what we send as it would."""

    params: dict[str, Any] = Field(default_factory=dict)
    params_ref: str | None = None
    run_id: str = ""
    namespace: str = "default"
    workflow_id: str = ""
    step_id: str = ""
    item: int = -1
    attempt: int = 1
    idempotency_key: str = ""
    timeout: float | None = None
    secrets: list[str] | None = None
    secret_nonce: str | None = None


def test_requests_read_across_the_previous_release():
    old = NodeRequest.model_validate_json(json.dumps(OLD_SHAPE))
    assert old.identity == CallIdentity(
        run_id="old-run", namespace="acme", workflow_id="flow", step_id="meter", item=1, attempt=2
    )
    assert old.identity.idempotency_key == OLD_SHAPE["idempotency_key"]

    new = NodeRequest(
        params={"a": 1}, identity=old.identity.model_copy(update={"labels": {"x": "y"}})
    )
    seen_by_old = PreviousNodeRequest.model_validate_json(new.model_dump_json())
    assert seen_by_old.model_dump() == {**OLD_SHAPE, "params": {"a": 1}, "timeout": None,
                                        "secrets": None}  # fmt: skip
    assert NodeRequest.model_validate_json(new.model_dump_json()) == new


@pytest.fixture(scope="module")
def metered(stack: RunningStack) -> Iterator[RunningStack]:
    """The stack with a service of `tests.support.metered` running (its nodes promoted)."""
    service = stack.spawn("nodes", "serve", "--catalog", METERED, "--groups", "metered")
    try:
        wait_for(lambda: answers(stack, "test.meter", "1.0.0"), timeout=60, what="test.meter")
        asyncio.run(promote_test_nodes(stack.settings))
        yield stack
    finally:
        service.terminate()
        service.wait(timeout=30)


def answers(stack: RunningStack, node: str, version: str) -> bool:
    async def ask() -> bool:
        nc = await nats.connect(nats_url(stack))
        try:
            await nc.request(exact_subject(node, version), b"{}", timeout=2)
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_an_old_shape_request_is_served(metered: RunningStack):
    async def ask() -> NodeReply:
        nc = await nats.connect(nats_url(metered))
        try:
            msg = await nc.request(
                exact_subject("test.meter", "1.0.0"), json.dumps(OLD_SHAPE).encode(), timeout=10
            )
            return NodeReply.model_validate_json(msg.data)
        finally:
            await nc.close()

    reply = asyncio.run(ask())
    assert reply.error is None, reply.error
    assert reply.output["key"] == "old-run/meter/1/2"  # the handler saw the old identity
    assert reply.metrics == {"rows": 2.0, "quality.score": 0.2}


FLOW = """
id: {id}
steps:
  - id: count
    node: test.meter@1
    for_each: [10, 20, 30, 40]
    with: {{rows: "{{{{ item }}}}", tokens: [100, "{{{{ item }}}}"]}}
  - id: broken
    node: test.meter@1
    continue_on_error: true
    retry: {{max_attempts: 2, initial_interval: 1s}}
    with: {{rows: 5, tokens: [7], fail: true}}
"""


def test_metrics_and_tokens_reach_traces_stats_and_runs_show(metered: RunningStack):
    flow = f"metered-{uuid.uuid4().hex[:8]}"
    result = metered.run(FLOW.format(id=flow))
    assert result.status == "completed", result.error
    assert result.steps["broken"].status == "failed"
    events = metered.traces(result.run_id, 6)
    by_key = {(e["step_id"], e["item"], e["attempt"]): e for e in events}
    for i, rows in enumerate((10, 20, 30, 40)):
        event = by_key[("count", i, 1)]
        assert event["metrics"] == {"rows": rows, "quality.score": rows / 10}
        assert event["cost_tokens"] == 100 + rows
    for attempt in (1, 2):  # failed attempts keep what they reported
        failed = by_key[("broken", -1, attempt)]
        assert failed["status"] == "error" and failed["error_class"] == "MeterError"
        assert failed["metrics"] == {"rows": 5, "quality.score": 0.5}
        assert failed["cost_tokens"] == 7

    done = metered.cli("stats", "--workflow", flow, "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["nodes"]
    assert row["count"] == 6 and row["cost_tokens"] == 4 * 100 + 100 + 2 * 7
    rows = row["metrics"]["rows"]  # 10, 20, 30, 40, 5, 5
    assert rows["count"] == 6 and rows["mean"] == pytest.approx(110 / 6)
    assert rows["p50"] == 20 and rows["p95"] == 40  # exact: sorted[floor(q * n)]
    assert row["metrics"]["quality.score"]["mean"] == pytest.approx(11 / 6)

    table = metered.cli("stats", "--workflow", flow)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any("test.meter" in line and " 514 " in f"{line} " for line in lines), table.stdout
    assert any("rows" in line.split() and "18.33" in line for line in lines), table.stdout

    shown = metered.cli("runs", "show", result.run_id)
    assert shown.returncode == 0, shown.stderr
    assert "TOKENS" in shown.stdout and "METRICS" in shown.stdout
    count0 = next(line for line in shown.stdout.splitlines() if "count[0]" in line)
    assert "110" in count0.split() and "quality.score=1 rows=10" in count0


def test_activity_inputs_read_across_the_previous_release():
    from orchestrator.activities import StepCall

    old = {  # a step activity the release before scheduled, retried after the upgrade
        "node": "test.meter",
        "version": "1.0.0",
        "params": {"rows": 1},
        "run_id": "r",
        "workflow_id": "flow",
        "workflow_version": 3,
        "namespace": "acme",
        "step_id": "s",
        "item": 2,
        "timeout": 5.0,
        "cache_ttl": None,
        "secrets": None,
        "secret_nonce": None,
    }
    call = StepCall.model_validate(old)
    assert call.identity == CallIdentity(
        run_id="r", workflow_id="flow", workflow_version=3, namespace="acme", step_id="s", item=2
    )
    assert call.attempt(4).idempotency_key == "r/s/2/4"
    sent = json.loads(call.model_dump_json())
    assert {k: sent[k] for k in old} == old  # a worker of the release before reads it too
    assert StepCall.model_validate(sent) == call
