"""Webhook replay: one signature starts at most one run, whatever the unsigned headers say,
and whichever trigger of the same signing key it is sent to; a delivery id counts only when
it is signed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest

from tests.reflux.api.conftest import ORDER_FLOW, auth
from tests.reflux.api.test_hooks import SECRET, hooked, runs_of, signed

__all__ = ["hooked"]  # the fixture, shared with test_hooks


def signed_with_delivery(body: bytes, delivery: str, at: float | None = None) -> dict[str, str]:
    """The delivery id inside the signed material: `<timestamp>.<delivery>.<body>`."""
    timestamp = str(int(at if at is not None else time.time()))
    material = f"{timestamp}.{delivery}.".encode() + body
    mac = hmac.new(SECRET.encode(), material, hashlib.sha256).hexdigest()
    return {"X-Reflux-Timestamp": timestamp, "X-Reflux-Signature": f"sha256={mac}",
            "X-Reflux-Delivery": delivery, "Content-Type": "application/json"}  # fmt: skip


def test_a_captured_delivery_replayed_with_fresh_delivery_ids_starts_one_run(api, tokens, hooked):
    body = json.dumps({"order": 5}).encode()
    captured = signed(body)  # signed over "<timestamp>.<body>": no delivery id in it
    first = api.post(f"/hooks/{hooked}/on-order", content=body, headers=captured)
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    for n in range(3):
        replay = {**captured, "X-Reflux-Delivery": f"fresh-{n}"}
        again = api.post(f"/hooks/{hooked}/on-order", content=body, headers=replay)
        assert (again.status_code, again.json()) == (200, {"run_id": run_id, "duplicate": True})
    assert [r["run_id"] for r in runs_of(api, tokens, hooked)] == [run_id]


def test_a_signed_delivery_id_dedups_across_timestamps(api, tokens, hooked):
    body = json.dumps({"order": 6}).encode()
    first = api.post(f"/hooks/{hooked}/on-order", content=body,
                     headers=signed_with_delivery(body, "d-1"))  # fmt: skip
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    # the sender retries the same delivery later: new timestamp, new signature, same id
    retry = api.post(f"/hooks/{hooked}/on-order", content=body,
                     headers=signed_with_delivery(body, "d-1", at=time.time() - 5))  # fmt: skip
    assert (retry.status_code, retry.json()) == (200, {"run_id": run_id, "duplicate": True})
    # a forged delivery id on a captured signed delivery breaks the signature
    forged = {**signed_with_delivery(body, "d-1"), "X-Reflux-Delivery": "d-2"}
    refused = api.post(f"/hooks/{hooked}/on-order", content=body, headers=forged)
    assert refused.status_code == 401, refused.text
    assert "<delivery>" in refused.json()["error"]["message"]
    # another signed delivery id is another delivery
    other = api.post(f"/hooks/{hooked}/on-order", content=body,
                     headers=signed_with_delivery(body, "d-2"))  # fmt: skip
    assert other.status_code == 201, other.text
    assert len(runs_of(api, tokens, hooked)) == 2


TWO_HOOKS = (
    ORDER_FLOW
    + """  - type: webhook
    id: first
    secret: TEST_HOOK
  - type: webhook
    id: second
    secret: TEST_HOOK
"""
)
"""Two triggers that share a signing key (and `hooked`'s on-order has it too)."""


@pytest.fixture
def shared(api, tokens) -> str:
    workflow_id = f"shared-{uuid.uuid4().hex[:8]}"
    pushed = api.post("/workflows", json={"source": TWO_HOOKS.format(id=workflow_id)},
                      headers=auth(tokens["author"]))  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    return workflow_id


@pytest.mark.parametrize("with_delivery", [True, False])
def test_a_delivery_replayed_to_another_trigger_of_the_same_key_starts_nothing(
    api, tokens, hooked, shared, with_delivery: bool
):
    body = json.dumps({"order": 9}).encode()
    delivery = f"d-{uuid.uuid4().hex[:8]}"
    captured = signed_with_delivery(body, delivery) if with_delivery else signed(body)
    first = api.post(f"/hooks/{hooked}/on-order", content=body, headers=captured)
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    for path in (f"/hooks/{shared}/first", f"/hooks/{shared}/second", f"/hooks/{hooked}/on-order"):
        again = api.post(path, content=body, headers=captured)
        assert (again.status_code, again.json()) == (200, {"run_id": run_id, "duplicate": True})
    assert runs_of(api, tokens, shared) == []
    assert [r["run_id"] for r in runs_of(api, tokens, hooked)] == [run_id]


def test_identical_deliveries_at_once_start_one_run(api, tokens, hooked, shared):
    """Sent together to three triggers of one key, twice each: one run per delivery."""
    paths = [f"/hooks/{hooked}/on-order", f"/hooks/{shared}/first", f"/hooks/{shared}/second"]

    async def race(body: bytes, headers: dict[str, str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.base_url), timeout=30) as client:
            sends = [client.post(p, content=body, headers=headers) for p in paths * 2]
            return list(await asyncio.gather(*sends))

    started: list[str] = []
    for n in range(3):
        body = json.dumps({"order": 100 + n}).encode()
        answers = asyncio.run(race(body, signed_with_delivery(body, f"race-{uuid.uuid4().hex}")))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 5 + [201], [a.text for a in answers]
        assert len({a.json()["run_id"] for a in answers}) == 1
        started.append(answers[0].json()["run_id"])
    every = [r["run_id"] for r in runs_of(api, tokens, hooked) + runs_of(api, tokens, shared)]
    assert sorted(every) == sorted(started)


def test_a_delivery_received_before_the_upgrade_is_still_a_duplicate(stack, api, tokens, hooked):
    """A row of the older per-trigger form (no signing key): its delivery starts nothing."""
    from infra.database import connect
    from infra.stack import addresses

    async def received_before() -> None:
        conn = await connect(addresses(stack.settings).database)
        try:
            await conn.execute(
                "INSERT INTO webhook_deliveries (workflow_id, trigger_id, delivery_id, run_id)"
                " VALUES ($1, 'on-order', 'before-1', 'the-old-run')",
                hooked,
            )
        finally:
            await conn.close()

    asyncio.run(received_before())
    body = json.dumps({"order": 1}).encode()
    again = api.post(f"/hooks/{hooked}/on-order", content=body,
                     headers=signed_with_delivery(body, "before-1"))  # fmt: skip
    assert (again.status_code, again.json()) == (200, {"run_id": "the-old-run", "duplicate": True})
    assert runs_of(api, tokens, hooked) == []
