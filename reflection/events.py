"""`TraceEvent`: one attempt of one step (or one `for_each` item), as stored in ClickHouse.

Every attempt gets an event: failures that were retried, the final success, cache hits,
skips and cancellations. `(run_id, step_id, item, attempt)` identifies an event, so a
redelivered one replaces rather than adds (see the sink's ReplacingMergeTree).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

if TYPE_CHECKING:
    from nodes import CallIdentity

TraceStatus = Literal["ok", "error", "timeout", "cancelled", "skipped"]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""What ClickHouse stores; a larger number makes the event invalid rather than a batch."""

ERROR_CHARS = 4000
MAP_ENTRIES = 64
CONTEXT_CHARS = 1000
"""Limits that keep one event far below a NATS message (errors and context values are cut,
not refused: tracing never fails a step)."""
LATER_FIELDS: tuple[str, ...] = ("labels",)
"""Fields added after the first release of events: a publisher older than one sends events
without it, which read as its default (`reflection.stream`, the warehouse's insert)."""


def inputs_hash(node: str, version: str, params: Any, namespace: str = "default") -> str:
    """sha256 of node, pinned version, the canonical JSON of the resolved params and (but for
    the default namespace) the namespace: the same key the step cache uses, so traces and
    cache entries join, and one tenant's results never answer another's calls."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    scope = "" if namespace == "default" else f"{namespace}\0"
    return hashlib.sha256(f"{scope}{node}\0{version}\0{canonical}".encode()).hexdigest()


class TraceEvent(BaseModel):
    run_id: str
    step_id: str
    item: Int64 = -1
    """The `for_each` index, or -1 for a plain step."""
    attempt: Int64 = 1
    node: str
    node_version: str
    status: TraceStatus
    start: datetime
    end: datetime
    latency_ms: float = 0.0
    inputs_hash: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    error_class: str | None = None
    retry_count: Int64 = 0
    """Attempts before this one (attempt - 1)."""
    cache_hit: bool = False
    cost_tokens: Int64 | None = None
    context: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    """The run's labels (`experiment=try1`, `shadow=true`, ...), on every event of it."""
    workflow_id: str = ""
    workflow_version: Int64 | None = None
    namespace: str = "default"
    replica: str = ""
    """The node service instance that answered (empty when none did)."""

    @field_validator("error")
    @classmethod
    def _cut_error(cls, value: str | None) -> str | None:
        return value if value is None or len(value) <= ERROR_CHARS else value[:ERROR_CHARS] + "…"

    @field_validator("metrics", mode="after")
    @classmethod
    def _finite(cls, value: dict[str, float]) -> dict[str, float]:
        """A node that is not ours may report NaN or infinity: left out, not averaged."""
        if all(math.isfinite(v) for v in value.values()):
            return value
        return {k: v for k, v in value.items() if math.isfinite(v)}

    @field_validator("metrics", "context", "labels")
    @classmethod
    def _cut_map(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) <= MAP_ENTRIES and not any(_long(k) or _long(v) for k, v in value.items()):
            return value
        return {
            k[:CONTEXT_CHARS]: v[:CONTEXT_CHARS] if isinstance(v, str) else v
            for k, v in list(value.items())[:MAP_ENTRIES]
        }

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.run_id, self.step_id, self.item, self.attempt)

    @classmethod
    def timed(cls, start: datetime, end: datetime | None = None, **fields: Any) -> TraceEvent:
        """An event whose latency is computed from its start and end (end: now)."""
        end = end or datetime.now(UTC)
        latency = max((end - start).total_seconds() * 1000, 0.0)
        attempt = int(fields.get("attempt", 1))
        fields.setdefault("retry_count", max(attempt - 1, 0))
        return cls(start=start, end=end, latency_ms=round(latency, 3), **fields)

    @classmethod
    def for_call(
        cls, call: CallIdentity, start: datetime, end: datetime | None = None, **fields: Any
    ) -> TraceEvent:
        """A timed event of the call `call` identifies: its run, workflow, namespace,
        step, item, attempt and labels taken from it."""
        return cls.timed(
            start,
            end,
            run_id=call.run_id,
            step_id=call.step_id,
            item=call.item,
            attempt=call.attempt,
            workflow_id=call.workflow_id,
            workflow_version=call.workflow_version,
            namespace=call.namespace,
            labels=call.labels,
            **fields,
        )


def _long(value: Any) -> bool:
    return isinstance(value, str) and len(value) > CONTEXT_CHARS
