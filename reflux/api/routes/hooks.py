"""Webhook triggers: `POST /hooks/{workflow}/{trigger}` starts one run of the workflow's
latest version per delivery, when the request is signed with the trigger's secret.

    X-Reflux-Timestamp: <unix seconds>            refused when older (or newer) than the
                                                  trigger's tolerance (default 5 minutes)
    X-Reflux-Signature: sha256=<hex>              HMAC-SHA256 of "<timestamp>.<delivery>.<body>"
                                                  with a delivery id, else "<timestamp>.<body>"
    X-Reflux-Delivery: <id>                       optional; counts only when signed: a
                                                  repeated id starts no second run

Why the delivery id must be signed: it is the key that tells a new delivery from a repeated
one, so a replayed capture with a fresh, unsigned id would start a new run each time. The
dedup key is the signed delivery id, or else the signature itself; an unsigned id is
ignored. So one signature starts at most one run, whatever the headers say; the records are
kept (never pruned), so at least as long as any tolerance window.

Why deliveries are told apart per signing key, not per trigger: the signature covers the
timestamp, the delivery id and the body, not the URL, so a delivery captured on its way to
one trigger verifies at every trigger that uses the same key (of the same namespace). Its
record is `key:<sha256 of namespace, key name, delivery id or signature>`, unique across
every workflow and trigger (infra/migrations/0005): sent to any of them, it starts one run;
again, to any of them, it answers 200 with that run. A unique index, not a lookup first,
decides which of two deliveries that arrive at once starts the run.

What a caller without the key learns: no token is needed, so a hook's answers say no more
than they must. A workflow that does not exist and a trigger that is not a webhook are the
same 404; a key that is not set (or does not open) is `503 this webhook is not configured`,
naming no namespace, key or variable (the API's log names them).

The body (at most the trigger's max_body_kb) is a JSON object: the run's inputs, within
REFLUX_INPUT_MAX_DEPTH and REFLUX_INPUT_MAX_BYTES. No token is needed: the signature is the
credential. Every refusal starts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

import asyncpg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from infra import InputShapeError, SecretError, environment_variable, loads, secrets_key
from orchestrator import WebhookTrigger
from reflux.api.context import ApiContext, ctx_of
from reflux.api.errors import ApiError

router = APIRouter(tags=["triggers"])
log = logging.getLogger("reflux.api")

NOT_CONFIGURED = "this webhook is not configured"


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
    from orchestrator import launch, load_version, new_run_id
    from registry import WorkflowRegistry

    ctx = ctx_of(request)
    client = request.client.host if request.client else "unknown"
    ctx.limiter.check(f"hook:{client}")
    registry = WorkflowRegistry(ctx.pool, f"webhook:{workflow_id}/{trigger_id}")
    missing = ApiError(404, f"no webhook '{trigger_id}' on workflow '{workflow_id}'")
    if await registry.namespace_of(workflow_id) is None:
        raise missing
    loaded = await load_version(ctx.pool, workflow_id)
    spec = loaded.spec
    trigger = spec.trigger(trigger_id)
    if not isinstance(trigger, WebhookTrigger):
        raise missing

    body = await _body(request, trigger.max_body_kb * 1024)
    timestamp = _check_timestamp(request.headers.get("x-reflux-timestamp"), trigger.tolerance)
    key = await _signing_key(ctx, spec.namespace, trigger.secret, f"{workflow_id}/{trigger_id}")
    kind, signed = _check_signature(
        request.headers.get("x-reflux-signature"),
        key,
        timestamp,
        request.headers.get("x-reflux-delivery"),
        body,
    )
    delivery = Delivery(workflow_id, trigger_id, spec.namespace, trigger.secret, kind, signed)
    limits = ctx.settings.limits
    try:
        inputs = loads(body or b"{}", limits.input_max_depth, limits.input_max_bytes, "the body")
    except InputShapeError as exc:
        raise ApiError(422, str(exc)) from None
    if not isinstance(inputs, dict):
        raise ApiError(422, "the body must be a JSON object: the run's inputs")
    spec.bind_inputs(inputs)  # bad inputs are a 422 before the delivery is claimed

    run_id = new_run_id(spec.id)
    first = await _claim(ctx.pool, delivery, run_id)
    if first is not None:
        response.status_code = 200
        return HookRun(run_id=first, duplicate=True)
    try:
        await launch(await ctx.temporal(), ctx.pool, ctx.settings, workflow_id, None, inputs,
                     actor=f"webhook:{trigger_id}", run_id=run_id)  # fmt: skip
    except BaseException:
        await ctx.pool.execute(  # let it go: the run did not start, a retry may start it
            "DELETE FROM webhook_deliveries WHERE delivery_id = $1 AND run_id = $2",
            delivery.record, run_id,
        )  # fmt: skip
        raise
    return HookRun(run_id=run_id)


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature checked out, and what tells it apart from another."""

    workflow_id: str
    trigger_id: str
    namespace: str
    key_name: str
    kind: str
    """"delivery" (`signed` is the signed X-Reflux-Delivery) or "signature" (the signature)."""
    signed: str

    @property
    def record(self) -> str:
        """Its `delivery_id`: one per signing key and delivery, whatever the trigger."""
        material = "\0".join((self.namespace, self.key_name, self.kind, self.signed))
        return "key:" + hashlib.sha256(material.encode()).hexdigest()

    @property
    def signing_key(self) -> str:
        return f"{self.namespace}/{self.key_name}"


async def _claim(pool: asyncpg.Pool, delivery: Delivery, run_id: str) -> str | None:
    """Claim the delivery for `run_id`: None when claimed (start the run), else the run that
    the same delivery, to this or any trigger of the same key, started before."""
    old = await pool.fetchval(  # received before migration 0005, in the per-trigger form
        "SELECT run_id FROM webhook_deliveries WHERE workflow_id = $1 AND trigger_id = $2"
        " AND delivery_id = $3 AND signing_key IS NULL",
        delivery.workflow_id, delivery.trigger_id, delivery.signed[:200],
    )  # fmt: skip
    if old is not None:
        return str(old)
    for _ in range(3):
        claimed = await pool.fetchval(
            "INSERT INTO webhook_deliveries"
            " (workflow_id, trigger_id, delivery_id, run_id, signing_key)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING run_id",
            delivery.workflow_id, delivery.trigger_id, delivery.record, run_id,
            delivery.signing_key,
        )  # fmt: skip
        if claimed is not None:
            return None
        first = await pool.fetchval(
            "SELECT run_id FROM webhook_deliveries"
            " WHERE delivery_id = $1 AND signing_key IS NOT NULL",
            delivery.record,
        )
        if first is not None:
            return str(first)
        # the request that held it let it go (its run did not start): claim it again
    raise ApiError(409, "the same delivery is being received at this moment; send it again")


async def _signing_key(ctx: ApiContext, namespace: str, name: str, hook: str) -> str:
    """The trigger's signing key: a webhook key of the workflow's namespace in the secret
    store (`reflux secrets set NAME --webhook`), else, for the default namespace, the API's
    REFLUX_WEBHOOK_KEY_<NAME>. Not a `secret()` kind: workflows cannot read it. When there
    is none, the caller (who need not hold a token) is told only that the hook is not
    configured; what is missing, and where, goes to the API's log."""
    from registry import SecretStore

    try:
        sealing = secrets_key(ctx.settings)
    except SecretError:  # no key here: only the environment's webhook keys are readable
        sealing = None
    try:
        key = await SecretStore(ctx.pool, sealing).value(namespace, name, "webhook")
    except SecretError as exc:
        log.warning("webhook %s: its key %s of namespace %s cannot be read: %s",
                    hook, name, namespace, exc)  # fmt: skip
        raise ApiError(503, NOT_CONFIGURED) from None
    if key is None:
        where = f" or {environment_variable('webhook', name)}" if namespace == "default" else ""
        log.warning("webhook %s: its key is not set (reflux secrets set %s --webhook"
                    " --namespace %s%s)", hook, name, namespace, where)  # fmt: skip
        raise ApiError(503, NOT_CONFIGURED)
    return key


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


def _check_signature(
    header: str | None, key: str, timestamp: str, delivery: str | None, body: bytes
) -> tuple[str, str]:
    """What tells the delivery apart: ("delivery", its id) when the signature covers the id,
    else ("signature", the signature) (an unsigned delivery id is ignored: anyone could
    change it)."""
    scheme, _, given = (header or "").partition("=")
    if scheme == "sha256" and delivery:
        material = f"{timestamp}.{delivery}.".encode() + body
        if hmac.compare_digest(given, _mac(key, material)):
            return "delivery", delivery
    plain = timestamp.encode() + b"." + body
    if scheme == "sha256" and hmac.compare_digest(given, _mac(key, plain)):
        return "signature", given
    raise ApiError(
        401,
        "bad signature: expected X-Reflux-Signature: sha256=<hex HMAC-SHA256 of"
        " '<timestamp>.<delivery>.<body>' with X-Reflux-Delivery, else '<timestamp>.<body>'>",
    )


def _mac(key: str, material: bytes) -> str:
    return hmac.new(key.encode(), material, hashlib.sha256).hexdigest()
