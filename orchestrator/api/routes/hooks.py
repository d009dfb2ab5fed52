"""Webhook triggers: `POST /hooks/{workflow}/{trigger}` starts one run of the workflow's
latest version per delivery, when the request is signed with the trigger's secret.

    X-Reflux-Timestamp: <unix seconds>            refused when older (or newer) than the
                                                  trigger's tolerance (default 5 minutes)
    X-Reflux-Signature: sha256=<hex>              HMAC-SHA256 of "<timestamp>.<body>"
    X-Reflux-Delivery: <id>                       optional; a repeated id starts no second
                                                  run (default: the signature)

The body (at most the trigger's max_body_kb) is a JSON object: the run's inputs. No token
is needed: the signature is the credential. Every refusal starts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from infra.secrets import secret_value
from orchestrator.api.context import ctx_of
from orchestrator.api.errors import ApiError
from orchestrator.spec import WebhookTrigger

router = APIRouter(tags=["triggers"])


class HookRun(BaseModel):
    run_id: str
    duplicate: bool = False
    """True: this delivery was received before; `run_id` is the run it started then."""


@router.post(
    "/hooks/{workflow_id}/{trigger_id}",
    response_model=HookRun,
    status_code=201,
    name="webhook",
    responses={200: {"model": HookRun, "description": "a repeated delivery: its first run"}},
)
async def webhook(
    workflow_id: str, trigger_id: str, request: Request, response: Response
) -> HookRun:
    from orchestrator.runs import load_version, new_run_id, submit
    from registry.workflows import WorkflowRegistry

    ctx = ctx_of(request)
    client = request.client.host if request.client else "unknown"
    ctx.limiter.check(f"hook:{client}")
    registry = WorkflowRegistry(ctx.pool, f"webhook:{workflow_id}/{trigger_id}")
    missing = ApiError(404, f"no webhook '{trigger_id}' on workflow '{workflow_id}'")
    if await registry.namespace_of(workflow_id) is None:
        raise missing
    loaded = await load_version(ctx.pool, workflow_id)
    stored, spec, catalog = loaded.stored, loaded.spec, loaded.catalog
    trigger = spec.trigger(trigger_id)
    if not isinstance(trigger, WebhookTrigger):
        raise missing

    body = await _body(request, trigger.max_body_kb * 1024)
    timestamp = _check_timestamp(request.headers.get("x-reflux-timestamp"), trigger.tolerance)
    key = secret_value(trigger.secret)
    if key is None:
        raise ApiError(
            503, f"the webhook's secret is not set on the API (REFLUX_SECRET_{trigger.secret})"
        )
    signature = _check_signature(request.headers.get("x-reflux-signature"), key, timestamp, body)
    try:
        inputs = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(422, f"the body is not JSON: {exc}") from None
    if not isinstance(inputs, dict):
        raise ApiError(422, "the body must be a JSON object: the run's inputs")
    bound = spec.bind_inputs(inputs)

    delivery = request.headers.get("x-reflux-delivery") or signature
    run_id = new_run_id(spec.id)
    claimed = await ctx.pool.fetchval(
        "INSERT INTO webhook_deliveries (workflow_id, trigger_id, delivery_id, run_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING run_id",
        workflow_id, trigger_id, delivery[:200], run_id,
    )  # fmt: skip
    if claimed is None:
        first = await ctx.pool.fetchval(
            "SELECT run_id FROM webhook_deliveries"
            " WHERE workflow_id = $1 AND trigger_id = $2 AND delivery_id = $3",
            workflow_id, trigger_id, delivery[:200],
        )  # fmt: skip
        response.status_code = 200
        return HookRun(run_id=first, duplicate=True)
    try:
        await submit(await ctx.temporal(), ctx.pool, ctx.settings, spec, catalog, bound,
                     stored.version, f"webhook:{trigger_id}", run_id)  # fmt: skip
    except BaseException:
        await ctx.pool.execute(
            "DELETE FROM webhook_deliveries WHERE workflow_id = $1 AND trigger_id = $2"
            " AND delivery_id = $3", workflow_id, trigger_id, delivery[:200],
        )  # fmt: skip
        raise
    return HookRun(run_id=run_id)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than this webhook's {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the body is larger than this webhook's {limit} bytes")
    return bytes(body)


def _check_timestamp(header: str | None, tolerance: float) -> str:
    if not header or not header.isdigit():
        raise ApiError(401, "X-Reflux-Timestamp (unix seconds) is missing or not a number")
    skew = abs(time.time() - int(header))
    if skew > tolerance:
        raise ApiError(401, f"stale timestamp: {skew:.0f}s from now; at most {tolerance:g}s")
    return header


def _check_signature(header: str | None, key: str, timestamp: str, body: bytes) -> str:
    scheme, _, given = (header or "").partition("=")
    expected = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if scheme != "sha256" or not hmac.compare_digest(given, expected.hexdigest()):
        raise ApiError(
            401,
            "bad signature: expected X-Reflux-Signature: "
            "sha256=<hex HMAC-SHA256 of '<timestamp>.<body>'>",
        )
    return given
