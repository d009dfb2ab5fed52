"""The activities: a step's node call over NATS request/reply, and the run ledger's end.

A node error crosses as `ApplicationError(type=<class>, non_retryable=not retryable)` with
the attempt number and details as its first detail, so the workflow can show attempts.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import nats.errors
from nats.aio.client import Client
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from infra.errors import NodeError, NodeTimeoutError, NoRespondersError, ObjectStoreError
from nodes.protocol import NodeReply, NodeRequest, exact_subject, fetch, offload
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
    step_id: str = ""
    timeout: float = 300.0


class StepCallResult(BaseModel):
    output: Any = None
    attempt: int = 1


class RunEnd(BaseModel):
    run_id: str
    status: str
    error: dict[str, Any] | None = None


class StepActivities:
    def __init__(self, nc: Client, store: ObjectStore, inline_limit: int) -> None:
        self.nc = nc
        self.store = store
        self.inline_limit = inline_limit

    @activity.defn(name=STEP_ACTIVITY)
    async def call_node(self, call: StepCall) -> StepCallResult:
        attempt = activity.info().attempt
        try:
            output = await self.request(call, attempt)
        except ObjectStoreError as exc:  # the store may come back: let Temporal retry
            raise ApplicationError(str(exc), {"attempt": attempt}, type=exc.code) from None
        except NodeError as exc:
            raise ApplicationError(
                exc.message,
                {"attempt": attempt, "retryable": exc.retryable, "details": exc.details},
                type=exc.code,
                non_retryable=not exc.retryable,
            ) from None
        return StepCallResult(output=output, attempt=attempt)

    async def request(self, call: StepCall, attempt: int) -> Any:
        subject = exact_subject(call.node, call.version)
        params, params_ref = await offload(call.params, self.store, self.inline_limit)
        payload = NodeRequest(
            params=params or {},
            params_ref=params_ref,
            run_id=call.run_id,
            workflow_id=call.workflow_id,
            step_id=call.step_id,
            attempt=attempt,
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
        if reply.error is not None:
            raise NodeError.from_wire(reply.error.model_dump(by_alias=True))
        return await fetch(reply.output, reply.output_ref, self.store)


class RunActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=RUN_END_ACTIVITY)
    async def record_end(self, end: RunEnd) -> None:
        await ledger.record_end(self.pool, end.run_id, end.status, end.error)
