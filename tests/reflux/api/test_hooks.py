"""Webhook triggers: signed deliveries start exactly one run; unsigned, badly signed,
stale or oversized ones start nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest

from tests.reflux.api.conftest import ORDER_FLOW, auth, poll_run

SECRET = "test-hook-secret"  # REFLUX_WEBHOOK_KEY_TEST_HOOK in the test stack's environment

FLOW = (
    ORDER_FLOW
    + """  - type: webhook
    id: on-order
    secret: TEST_HOOK
    max_body_kb: 1
    tolerance: 60s
  - type: webhook
    id: unset
    secret: NOT_SET_ANYWHERE
"""
)


def signed(
    body: bytes, *, secret: str = SECRET, at: float | None = None, delivery: str = ""
) -> dict[str, str]:  # noqa: E501
    timestamp = str(int(at if at is not None else time.time()))
    signed_part = f"{timestamp}.{delivery}." if delivery else f"{timestamp}."  # delivery signed
    mac = hmac.new(secret.encode(), signed_part.encode() + body, hashlib.sha256).hexdigest()
    headers = {"X-Reflux-Timestamp": timestamp, "X-Reflux-Signature": f"sha256={mac}",
               "Content-Type": "application/json"}  # fmt: skip
    if delivery:
        headers["X-Reflux-Delivery"] = delivery
    return headers


@pytest.fixture
def hooked(api, tokens) -> str:
    workflow_id = f"hooked-{uuid.uuid4().hex[:8]}"
    pushed = api.post("/workflows", json={"source": FLOW.format(id=workflow_id)},
                      headers=auth(tokens["author"]))  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    return workflow_id


def runs_of(api, tokens, workflow_id: str) -> list[dict]:
    response = api.get("/runs", params={"workflow": workflow_id}, headers=auth(tokens["viewer"]))
    return response.json()


def test_a_signed_delivery_starts_one_run(api, tokens, hooked):
    body = json.dumps({"order": 42}).encode()
    headers = signed(body, delivery="delivery-1")
    first = api.post(f"/hooks/{hooked}/on-order", content=body, headers=headers)
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    assert first.json() == {"run_id": run_id, "duplicate": False}
    again = api.post(
        f"/hooks/{hooked}/on-order", content=body, headers=signed(body, delivery="delivery-1")
    )  # noqa: E501
    assert (again.status_code, again.json()) == (200, {"run_id": run_id, "duplicate": True})
    assert [r["run_id"] for r in runs_of(api, tokens, hooked)] == [run_id]
    run = poll_run(api, tokens, run_id)
    assert (run["status"], run["outputs"], run["started_by"]) == (
        "completed",
        {"order": 42},
        "webhook:on-order",
    )


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("no signature", 401, "bad signature"),
        ("wrong secret", 401, "bad signature"),
        ("tampered body", 401, "bad signature"),
        ("stale", 401, "stale timestamp"),
        ("future", 401, "stale timestamp"),
        ("no timestamp", 401, "X-Reflux-Timestamp"),
        ("oversized", 413, "larger than this webhook's 1024 bytes"),
        ("not an object", 422, "must be a JSON object"),
        ("bad inputs", 422, "required input is missing"),
        ("unknown trigger", 404, "no webhook 'nope'"),
        ("secret not set", 503, "this webhook is not configured"),
    ],
)
def test_refused_deliveries_start_nothing(api, tokens, hooked, case, status, message):
    body = json.dumps({"order": 7}).encode()
    trigger, headers = "on-order", signed(body)
    if case == "no signature":
        del headers["X-Reflux-Signature"]
    elif case == "wrong secret":
        headers = signed(body, secret="guess")
    elif case == "tampered body":
        body = json.dumps({"order": 8}).encode()
    elif case == "stale":
        headers = signed(body, at=time.time() - 120)
    elif case == "future":
        headers = signed(body, at=time.time() + 120)
    elif case == "no timestamp":
        del headers["X-Reflux-Timestamp"]
    elif case == "oversized":
        body = json.dumps({"order": 7, "pad": "x" * 2000}).encode()
        headers = signed(body)
    elif case == "not an object":
        body = b"[7]"
        headers = signed(body)
    elif case == "bad inputs":
        body = b"{}"
        headers = signed(body)
    elif case == "unknown trigger":
        trigger = "nope"
    elif case == "secret not set":
        trigger = "unset"
    response = api.post(f"/hooks/{hooked}/{trigger}", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert runs_of(api, tokens, hooked) == []


def test_a_workflow_without_the_trigger_has_no_hook(api, tokens):
    response = api.post("/hooks/no-such-flow/on-order", content=b"{}", headers=signed(b"{}"))
    assert response.status_code == 404


def test_an_unconfigured_webhook_names_nothing_to_its_caller(api, tokens):
    """No token is needed to call a hook: a missing key is told without the namespace, the
    key's name or where it would be read from (the API's log has them)."""
    ns = f"team-{uuid.uuid4().hex[:6]}"
    workflow_id = f"hooked-{uuid.uuid4().hex[:8]}"
    source = FLOW.format(id=workflow_id).replace(
        f"id: {workflow_id}\n", f"id: {workflow_id}\nnamespace: {ns}\n", 1
    )
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text
    body = json.dumps({"order": 1}).encode()
    for trigger in ("on-order", "unset"):  # TEST_HOOK is set for the default namespace only
        response = api.post(f"/hooks/{workflow_id}/{trigger}", content=body, headers=signed(body))
        assert response.status_code == 503, response.text
        message = response.json()["error"]["message"]
        assert message == "this webhook is not configured", message
        for secret in (ns, "TEST_HOOK", "NOT_SET_ANYWHERE", "REFLUX_", "reflux secrets"):
            assert secret not in response.text
    assert runs_of(api, tokens, workflow_id) == []
