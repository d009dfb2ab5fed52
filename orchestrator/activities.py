"""The activities: a step's node call over NATS request/reply, and the run ledger's end.

A node error crosses as `ApplicationError(type=<class>, non_retryable=not retryable)` with
the attempt number and details as its first detail, so the workflow can show attempts.
Every attempt, whatever its outcome, is traced (see `reflection.publisher`); one lost with
its worker (killed, or cut off from Temporal) is traced by the next attempt, as an error of
class WorkerLost (`lost_attempt`). A local step's attempt cannot be: the next worker runs
it again under the same attempt number (and idempotency key), so its trace is that one's.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client as TemporalClient
from temporalio.exceptions import ApplicationError

from infra import NodeError, NodeTimeoutError, NoRespondersError, ObjectStoreError
from nodes import (
    NodeReply,
    NodeRequest,
    canonical_placeholders,
    exact_subject,
    idempotency_key,
)
from reflection import StepCache, TraceEvent, TracePublisher, TraceStatus, inputs_hash
from registry import ObjectStore, fetch, offload
from registry import runs as ledger

STEP_ACTIVITY = "reflux.step"
RUN_END_ACTIVITY = "reflux.run.end"
WORKER_LOST = "WorkerLost"
"""The error class of an attempt lost with its worker, traced by the attempt after it."""

log = logging.getLogger("reflux.worker")


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
    secrets: list[str] | None = None
    """The secret names the step's templates name: the only ones the node resolves."""
    secret_nonce: str | None = None
    """The run's placeholder nonce: only placeholders that carry it resolve."""

    @property
    def keyed_params(self) -> Any:
        """The params as the cache and traces key them: without the run's nonce, so the
        same call in another run has the same key."""
        return canonical_placeholders(self.params) if self.secrets else self.params


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
        info = activity.info()
        attempt = info.attempt
        start = datetime.now(UTC)
        if attempt > 1 and not info.is_local:
            await self._trace_lost_attempt(call, info)
        if call.cache_ttl:
            hit = await self.cache.get(call.node, call.version, call.keyed_params, call.namespace)
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
            await self.cache.put(
                call.node, call.version, call.keyed_params, output, call.cache_ttl, call.namespace
            )
        return StepCallResult(output=output, attempt=attempt)

    async def _trace_lost_attempt(self, call: StepCall, info: activity.Info) -> None:
        """Trace the previous attempt when its worker was lost (see `lost_attempt`): it
        could not trace itself. Tracing never fails a step: a failed look-up is logged."""
        try:
            lost = await lost_attempt(activity.client(), info)
        except Exception as exc:  # Temporal busy or away: the attempt goes on untraced
            log.warning("could not check attempt %d of %s: %s", info.attempt - 1, call.step_id, exc)
            return
        if lost is None:
            return
        start, end, message = lost
        self.traces.emit(
            TraceEvent.timed(
                start,
                end,
                run_id=call.run_id,
                step_id=call.step_id,
                item=call.item,
                attempt=info.attempt - 1,
                node=call.node,
                node_version=call.version,
                status="error",
                inputs_hash=inputs_hash(call.node, call.version, call.keyed_params, call.namespace),
                error=message,
                error_class=WORKER_LOST,
                workflow_id=call.workflow_id,
                workflow_version=call.workflow_version,
                namespace=call.namespace,
            )
        )

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
                inputs_hash=inputs_hash(call.node, call.version, call.keyed_params, call.namespace),
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
            secrets=call.secrets,
            secret_nonce=call.secret_nonce,
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


async def lost_attempt(
    client: TemporalClient, info: activity.Info
) -> tuple[datetime, datetime, str] | None:
    """When the attempt before this one (a regular activity's) ended because Temporal
    stopped waiting for its worker, its start, end and a message; else None.

    The signal is Temporal's own: a retried activity's last failure is on the workflow's
    pending activity. A traced attempt failed with an application error (the node's, or
    one raised after tracing); only an attempt nobody answered for, its worker killed or
    cut off, fails with a start-to-close (or heartbeat) timeout. Asked only on retries, so
    first attempts cost nothing."""
    assert info.workflow_id is not None
    handle = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
    described = await handle.describe(rpc_timeout=timedelta(seconds=5))
    pending = next(
        (a for a in described.raw_description.pending_activities
         if a.activity_id == info.activity_id),
        None,
    )  # fmt: skip
    if pending is None or not pending.last_failure.HasField("timeout_failure_info"):
        return None
    kind = pending.last_failure.timeout_failure_info.timeout_type
    if kind not in (TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE, TimeoutType.TIMEOUT_TYPE_HEARTBEAT):
        return None
    end = (
        pending.last_attempt_complete_time.ToDatetime(UTC)
        if pending.HasField("last_attempt_complete_time")
        else info.current_attempt_scheduled_time
    )
    if kind == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE:
        waited = info.start_to_close_timeout or timedelta(0)
        start, why = end - waited, f"no result within {waited.total_seconds():g}s"
    else:
        start, why = end, "its heartbeats stopped"
    message = f"attempt {info.attempt - 1} was lost with its worker: {why}; Temporal retried it"
    return start, end, message


class RunActivities:
    def __init__(self, pool: asyncpg.Pool, traces: TracePublisher) -> None:
        self.pool = pool
        self.traces = traces

    @activity.defn(name=RUN_END_ACTIVITY)
    async def record_end(self, end: RunEnd) -> None:
        for event in end.events:
            self.traces.emit(event)
        await ledger.record_end(self.pool, end.run_id, end.status, end.error)
