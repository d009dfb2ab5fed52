"""Input shape at the API's doors: a JSON body nested past REFLUX_INPUT_MAX_DEPTH is a
one-line 422 before anything parses it, and starts nothing (no run row)."""

from __future__ import annotations

import asyncio
import json
import uuid

from infra.database import connect
from infra.stack import addresses
from tests.helpers.stack import RunningStack
from tests.reflux.api.conftest import ORDER_FLOW, auth
from tests.reflux.api.test_access import assert_error
from tests.reflux.api.test_hooks import FLOW as HOOK_FLOW
from tests.reflux.api.test_hooks import signed


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_deep(source: str) -> str:
    """The workflow with an input that may hold nested lists (so only the depth refuses)."""
    order = "  order: {type: integer, required: true}\n"
    assert order in source
    return source.replace(order, order + "  deep: {type: array, default: []}\n")


def ledger_rows(stack: RunningStack, workflow_id: str) -> int:
    async def count() -> int:
        conn = await connect(addresses(stack.settings).database)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM runs WHERE workflow_id = $1", workflow_id)
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def test_a_deep_run_body_is_422_and_starts_nothing(stack: RunningStack, api, tokens):
    workflow_id = f"shape-{uuid.uuid4().hex[:8]}"
    source = with_deep(ORDER_FLOW.format(id=workflow_id).replace("triggers:\n", ""))
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    body = f'{{"workflow": "{workflow_id}", "inputs": {{"order": 1, "deep": {nested(900)}}}}}'
    headers = {**auth(tokens["author"]), "Content-Type": "application/json"}
    response = api.post("/runs", content=body, headers=headers)
    message = assert_error(response, 422, "InvalidRequest")
    assert "nested deeper than 64 levels" in message and "\n" not in message
    assert ledger_rows(stack, workflow_id) == 0
    # within the bound it is a run as usual
    fine = api.post("/runs", json={"workflow": workflow_id, "inputs": {"order": 1}},
                    headers=auth(tokens["author"]))  # fmt: skip
    assert fine.status_code == 201, fine.text


def test_a_deep_webhook_body_is_422_and_starts_nothing(stack: RunningStack, api, tokens):
    workflow_id = f"shape-{uuid.uuid4().hex[:8]}"
    source = with_deep(HOOK_FLOW.format(id=workflow_id)).replace("max_body_kb: 1", "max_body_kb: 8")
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    body = f'{{"order": 1, "deep": {nested(900)}}}'.encode()
    response = api.post(f"/hooks/{workflow_id}/on-order", content=body, headers=signed(body))
    message = assert_error(response, 422, "InvalidRequest")
    assert "nested deeper than 64 levels" in message
    assert ledger_rows(stack, workflow_id) == 0


def test_a_deep_webhook_body_sent_as_text_is_422_too(stack: RunningStack, api, tokens):
    """Sent as text, the body is still refused: the API checks every body's depth."""
    workflow_id = f"shape-{uuid.uuid4().hex[:8]}"
    source = with_deep(HOOK_FLOW.format(id=workflow_id)).replace("max_body_kb: 1", "max_body_kb: 8")
    assert (
        api.post("/workflows", json={"source": source}, headers=auth(tokens["author"])).status_code
        == 201
    )  # noqa: E501
    body = json.dumps({"order": 1}).encode()[:-1] + b', "deep": ' + nested(200).encode() + b"}"
    headers = {**signed(body), "Content-Type": "text/plain"}
    response = api.post(f"/hooks/{workflow_id}/on-order", content=body, headers=headers)
    assert "nested deeper than 64 levels" in assert_error(response, 422, "InvalidRequest")
    assert ledger_rows(stack, workflow_id) == 0


def test_a_deep_event_message_starts_nothing_and_says_why(stack: RunningStack, api, tokens):
    from tests.reflux.api.test_event_triggers import FLOW as EVENT_FLOW
    from tests.reflux.api.test_event_triggers import request

    tag = uuid.uuid4().hex[:8]
    workflow_id = f"shape-{tag}"
    source = with_deep(EVENT_FLOW.format(id=workflow_id, tag=tag))
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    body = f'{{"order": 1, "deep": {nested(900)}}}'.encode()
    answer = request(stack, f"shop.{tag}.orders.new", body)
    assert set(answer) == {"error"}
    assert "nested deeper than 64 levels" in answer["error"]
    assert ledger_rows(stack, workflow_id) == 0
