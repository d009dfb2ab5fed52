"""The activities: a step's node call over NATS request/reply, and the run ledger's end.

A node error crosses as `ApplicationError(type=<class>, non_retryable=not retryable)` with
the attempt number and details as its first detail, so the workflow can show attempts.
Every attempt, whatever its outcome, is traced (see `reflection.publisher`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.errors import NodeError, NodeTimeoutError, NoRespondersError, ObjectStoreError
from nodes.protocol import (
    NodeReply,
    NodeRequest,
    exact_subject,
    fetch,
    idempotency_key,
    offload,
)
from reflection.cache import StepCache
from reflection.events import TraceEvent, TraceStatus, inputs_hash
from reflection.publisher import TracePublisher
from registry import runs as ledger
from registry.objects import ObjectStore

STEP_ACTIVITY = "reflux.step"
RUN_END_ACTIVITY = "reflux.run.end"


class StepCall(BaseModel):
    node: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)
    run_id: str = ""
    workflow_id: str = ""
    workflow_version: int | None = None
    namespace: str = "default"
    step_id: str = ""
    item: int = -1
    """The `for_each` index, or -1."""
    timeout: float = 300.0
    cache_ttl: float | None = None
    """Set: an identical earlier call's result (same node version and params) may answer."""


class StepCallResult(BaseModel):
    output: Any = None
    attempt: int = 1
    cache_hit: bool = False


class RunEnd(BaseModel):
    run_id: str
    status: str
    error: dict[str, Any] | None = None
    events: list[TraceEvent] = Field(default_factory=list)
    """Trace events the workflow decided itself: skips, steps cancelled before they ran,
    engine meta-steps."""


class StepActivities:
    def __init__(
        self,
        nc: Client,
        store: ObjectStore,
        inline_limit: int,
        traces: TracePublisher,
        cache: StepCache,
    ) -> None:
        self.nc = nc
        self.store = store
        self.inline_limit = inline_limit
        self.traces = traces
        self.cache = cache

    @activity.defn(name=STEP_ACTIVITY)
    async def call_node(self, call: StepCall) -> StepCallResult:
        attempt = activity.info().attempt
        start = datetime.now(UTC)
        if call.cache_ttl:
            hit = await self.cache.get(call.node, call.version, call.params)
            if hit is not None:
                self._trace(call, attempt, start, "ok", "cache", cache_hit=True)
                return StepCallResult(output=hit.output, attempt=attempt, cache_hit=True)
        replica = [""]
        try:
            output = await self.request(call, attempt, replica)
        except ObjectStoreError as exc:  # the store may come back: let Temporal retry
            self._trace(call, attempt, start, "error", replica[0], exc.code, str(exc))
            raise ApplicationError(str(exc), {"attempt": attempt}, type=exc.code) from None
        except NodeError as exc:
            status: TraceStatus = "timeout" if exc.code == "NodeTimeoutError" else "error"
            self._trace(call, attempt, start, status, replica[0], exc.code, exc.message)
            raise ApplicationError(
                exc.message,
                {"attempt": attempt, "retryable": exc.retryable, "details": exc.details},
                type=exc.code,
                non_retryable=not exc.retryable,
            ) from None
        except asyncio.CancelledError:
            self._trace(call, attempt, start, "cancelled", replica[0])
            raise
        self._trace(call, attempt, start, "ok", replica[0])
        if call.cache_ttl:
            await self.cache.put(call.node, call.version, call.params, output, call.cache_ttl)
        return StepCallResult(output=output, attempt=attempt)

    def _trace(
        self,
        call: StepCall,
        attempt: int,
        start: datetime,
        status: TraceStatus,
        replica: str,
        error_class: str | None = None,
        error: str | None = None,
        *,
        cache_hit: bool = False,
    ) -> None:
        self.traces.emit(
            TraceEvent.timed(
                start,
                run_id=call.run_id,
                step_id=call.step_id,
                item=call.item,
                attempt=attempt,
                node=call.node,
                node_version=call.version,
                status=status,
                inputs_hash=inputs_hash(call.node, call.version, call.params),
                error=error,
                error_class=error_class,
                cache_hit=cache_hit,
                workflow_id=call.workflow_id,
                workflow_version=call.workflow_version,
                namespace=call.namespace,
                replica=replica,
            )
        )

    async def request(self, call: StepCall, attempt: int, replica: list[str]) -> Any:
        subject = exact_subject(call.node, call.version)
        params, params_ref = await offload(call.params, self.store, self.inline_limit)
        payload = NodeRequest(
            params=params or {},
            params_ref=params_ref,
            run_id=call.run_id,
            namespace=call.namespace,
            workflow_id=call.workflow_id,
            step_id=call.step_id,
            item=call.item,
            attempt=attempt,
            idempotency_key=idempotency_key(call.run_id, call.step_id, call.item, attempt),
            timeout=call.timeout,
        )
        try:
            msg = await self.nc.request(
                subject, payload.model_dump_json().encode(), timeout=call.timeout
            )
        except nats.errors.NoRespondersError:
            raise NoRespondersError(
                f"no service serves {call.node}@{call.version} (subject {subject})"
            ) from None
        except nats.errors.TimeoutError:
            raise NodeTimeoutError(
                f"{call.node}@{call.version} gave no reply within {call.timeout:g}s"
            ) from None
        if msg.headers and msg.headers.get("Nats-Service-Error"):
            raise NodeError(
                f"{call.node}@{call.version}: {msg.headers['Nats-Service-Error']}",
                retryable=True,
            )
        reply = NodeReply.model_validate_json(msg.data)
        replica[0] = reply.replica
        if reply.error is not None:
            raise NodeError.from_wire(reply.error.model_dump(by_alias=True))
        return await fetch(reply.output, reply.output_ref, self.store)


class RunActivities:
    def __init__(self, pool: asyncpg.Pool, traces: TracePublisher) -> None:
        self.pool = pool
        self.traces = traces

    @activity.defn(name=RUN_END_ACTIVITY)
    async def record_end(self, end: RunEnd) -> None:
        for event in end.events:
            self.traces.emit(event)
        await ledger.record_end(self.pool, end.run_id, end.status, end.error)
