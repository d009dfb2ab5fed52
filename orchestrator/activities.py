"""The activities: a step's node call over NATS request/reply, and the run ledger's end.

A node error crosses as `ApplicationError(type=<class>, non_retryable=not retryable)` with
the attempt number and details as its first detail, so the workflow can show attempts.
Every attempt, whatever its outcome, is traced (see `reflection.publisher`), with the run's
labels and what the node reported (metrics, tokens; also on a failed attempt); one lost with
its worker (killed, or cut off from Temporal) is traced by the next attempt, as an error of
class WorkerLost (`lost_attempt`). A local step's attempt cannot be: the next worker runs
it again under the same attempt number (and idempotency key), so its trace is that one's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client
from pydantic import (
    BaseModel,
    Field,
)
from temporalio import activity
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client as TemporalClient
from temporalio.exceptions import ApplicationError

from infra import NodeError, NodeTimeoutError, NoRespondersError, ObjectStoreError
from nodes import (
    CallIdentity,
    Identified,
    NodeReply,
    NodeRequest,
    canonical_placeholders,
    exact_subject,
)
from reflection import StepCache, TraceEvent, TracePublisher, TraceStatus, inputs_hash
from registry import ObjectStore, fetch, offload
from registry import runs as ledger

STEP_ACTIVITY = "reflux.step"
RUN_END_ACTIVITY = "reflux.run.end"
WORKER_LOST = "WorkerLost"
"""The error class of an attempt lost with its worker, traced by the attempt after it."""

log = logging.getLogger("reflux.worker")


class StepCall(Identified):
    """One step (or `for_each` item) call as the workflow schedules it. `identity.attempt`
    is Temporal's: the activity sets it. An input in the flat shape of the release before
    `identity` (an activity scheduled before the upgrade) is read into it; each input also
    carries that flat copy, for a worker of the release before (drop both in the release
    after this one)."""

    node: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)
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

    def attempt(self, attempt: int) -> CallIdentity:
        """The identity of attempt number `attempt` of this call."""
        return self.identity.model_copy(update={"attempt": attempt})

    @property
    def inputs_hash(self) -> str:
        return inputs_hash(self.node, self.version, self.keyed_params, self.identity.namespace)


@dataclass
class Answer:
    """What a node service's reply said besides the output, kept when the call failed."""

    replica: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    cost_tokens: int | None = None


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
        identity = call.attempt(attempt)
        namespace = identity.namespace
        start = datetime.now(UTC)
        if attempt > 1 and not info.is_local:
            await self._trace_lost_attempt(call, info)
        if call.cache_ttl:
            hit = await self.cache.get(call.node, call.version, call.keyed_params, namespace)
            if hit is not None:
                self._trace(call, identity, start, "ok", Answer("cache"), cache_hit=True)
                return StepCallResult(output=hit.output, attempt=attempt, cache_hit=True)
        answer = Answer()
        try:
            output = await self.request(call, identity, answer)
        except ObjectStoreError as exc:  # the store may come back: let Temporal retry
            self._trace(call, identity, start, "error", answer, exc.code, str(exc))
            raise ApplicationError(str(exc), {"attempt": attempt}, type=exc.code) from None
        except NodeError as exc:
            status: TraceStatus = "timeout" if exc.code == "NodeTimeoutError" else "error"
            self._trace(
                call, identity, start, status, answer, exc.code, exc.message,
                context=error_context(exc),
            )  # fmt: skip
            raise ApplicationError(
                exc.message,
                {"attempt": attempt, "retryable": exc.retryable, "details": exc.details},
                type=exc.code,
                non_retryable=not exc.retryable,
            ) from None
        except asyncio.CancelledError:
            self._trace(call, identity, start, "cancelled", answer)
            raise
        self._trace(call, identity, start, "ok", answer)
        if call.cache_ttl:
            await self.cache.put(
                call.node, call.version, call.keyed_params, output, call.cache_ttl, namespace
            )
        return StepCallResult(output=output, attempt=attempt)

    async def _trace_lost_attempt(self, call: StepCall, info: activity.Info) -> None:
        """Trace the previous attempt when its worker was lost (see `lost_attempt`): it
        could not trace itself. Tracing never fails a step: a failed look-up is logged."""
        try:
            lost = await lost_attempt(activity.client(), info)
        except Exception as exc:  # Temporal busy or away: the attempt goes on untraced
            log.warning(
                "could not check attempt %d of %s: %s",
                info.attempt - 1,
                call.identity.step_id,
                exc,
            )
            return
        if lost is None:
            return
        start, end, message = lost
        self.traces.emit(
            TraceEvent.for_call(
                call.attempt(info.attempt - 1),
                start,
                end,
                node=call.node,
                node_version=call.version,
                status="error",
                inputs_hash=call.inputs_hash,
                error=message,
                error_class=WORKER_LOST,
            )
        )

    def _trace(
        self,
        call: StepCall,
        identity: CallIdentity,
        start: datetime,
        status: TraceStatus,
        answer: Answer,
        error_class: str | None = None,
        error: str | None = None,
        *,
        cache_hit: bool = False,
        context: dict[str, str] | None = None,
    ) -> None:
        self.traces.emit(
            TraceEvent.for_call(
                identity,
                start,
                node=call.node,
                node_version=call.version,
                status=status,
                inputs_hash=call.inputs_hash,
                error=error,
                error_class=error_class,
                cache_hit=cache_hit,
                replica=answer.replica,
                metrics=answer.metrics,
                cost_tokens=answer.cost_tokens,
                context=context or {},
            )
        )

    async def request(self, call: StepCall, identity: CallIdentity, answer: Answer) -> Any:
        """The node's output for this attempt; what its reply said besides goes to `answer`,
        also when the call failed."""
        subject = exact_subject(call.node, call.version)
        params, params_ref = await offload(call.params, self.store, self.inline_limit)
        payload = NodeRequest(
            params=params or {},
            params_ref=params_ref,
            identity=identity,
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
        answer.replica, answer.metrics, answer.cost_tokens = (
            reply.replica,
            reply.metrics,
            reply.cost_tokens,
        )
        if reply.error is not None:
            raise NodeError.from_wire(reply.error.model_dump(by_alias=True))
        return await fetch(reply.output, reply.output_ref, self.store)


def error_context(exc: NodeError) -> dict[str, str]:
    """What a failed attempt's trace keeps of its error besides class and message, for the
    Critic: whether the node called it retryable, the `Retry-After` it reported, and the
    HTTP status of an HTTP error."""
    context = {"retryable": "true" if exc.retryable else "false"}
    for key in ("retry_after", "status"):
        value = exc.details.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            context[key] = str(value)[:100]
    return context


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
