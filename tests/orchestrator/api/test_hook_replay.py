"""Webhook replay: one signature starts at most one run, whatever the unsigned headers say;
a delivery id counts only when it is signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from tests.orchestrator.api.test_hooks import SECRET, hooked, runs_of, signed

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
