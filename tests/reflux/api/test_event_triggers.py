"""Event triggers: a NATS message on the trigger's subject starts a run (as the worker's
listener does it), and a message that does not fit starts nothing."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import nats

from tests.helpers.stack import RunningStack, nats_url
from tests.helpers.waiting import eventually_async
from tests.reflux.api.conftest import ORDER_FLOW, auth, poll_run

FLOW = (
    ORDER_FLOW
    + """  - type: event
    id: on-order
    subject: "shop.{tag}.orders.*"
"""
)


def request(stack: RunningStack, subject: str, body: bytes) -> dict:
    async def ask() -> dict:
        nc = await nats.connect(nats_url(stack))

        async def answer() -> dict | None:  # never empty: a run id or an error
            try:
                reply = await nc.request(subject, body, timeout=2)
            except nats.errors.NoRespondersError:
                return None
            return dict(json.loads(reply.data))

        try:  # the listeners reload right after the push; give them a moment
            return await eventually_async(
                answer, timeout=10, every=0.1, what=f"a listener on {subject}"
            )
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_a_message_starts_a_run_and_a_bad_one_does_not(stack: RunningStack, api, tokens):
    tag = uuid.uuid4().hex[:8]
    workflow_id = f"evented-{tag}"
    pushed = api.post("/workflows", json={"source": FLOW.format(id=workflow_id, tag=tag)},
                      headers=auth(tokens["author"]))  # fmt: skip
    assert pushed.status_code == 201, pushed.text

    answer = request(stack, f"shop.{tag}.orders.new", json.dumps({"order": 7}).encode())
    run_id = answer["run_id"]
    run = poll_run(api, tokens, run_id)
    assert (run["status"], run["outputs"], run["started_by"]) == (
        "completed",
        {"order": 7},
        "event:on-order",
    )

    refused = request(stack, f"shop.{tag}.orders.new", b'{"order": "seven"}')
    assert "order" in refused["error"]
    assert request(stack, f"shop.{tag}.orders.new", b"[1]") == {
        "error": "the message must be a JSON object: the run's inputs"
    }
    runs = api.get("/runs", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    assert [r["run_id"] for r in runs.json()] == [run_id]


def test_reserved_subjects_are_refused(api, tokens):
    source = FLOW.format(id="bad-event", tag="x").replace("shop.x.orders.*", "reflux.node.>")
    response = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert response.status_code == 422
    assert "is reserved" in response.json()["error"]["message"]


def test_a_namespaced_workflow_listens_only_under_its_namespace(api, tokens):
    tag = uuid.uuid4().hex[:8]
    ns = f"acme-{tag}"
    workflow_id = f"listener-{tag}"
    theirs = FLOW.format(id=workflow_id, tag=tag).replace(
        f"id: {workflow_id}\n", f"id: {workflow_id}\nnamespace: {ns}\n", 1
    )
    response = api.post("/workflows", json={"source": theirs}, headers=auth(tokens["author"]))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.endswith(
        f"triggers[0].subject: a workflow of namespace '{ns}' may listen only on subjects"
        f" under '{ns}.'"
    ), message
    assert re.search(r":\d+:\d+: triggers\[0\]\.subject: ", message) and "\n" not in message
    # under its namespace it may; a default-namespace workflow keeps any unreserved subject
    own = theirs.replace(f"shop.{tag}.orders.*", f"{ns}.orders.*")
    assert api.post("/workflows", json={"source": own},
                    headers=auth(tokens["author"])).status_code == 201  # fmt: skip
    anywhere = FLOW.format(id=f"default-{tag}", tag=tag)
    assert api.post("/workflows", json={"source": anywhere},
                    headers=auth(tokens["author"])).status_code == 201  # fmt: skip
