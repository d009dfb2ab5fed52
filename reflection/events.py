"""`TraceEvent`: one attempt of one step (or one `for_each` item), as stored in ClickHouse.

Every attempt gets an event: failures that were retried, the final success, cache hits,
skips and cancellations. `(run_id, step_id, item, attempt)` identifies an event, so a
redelivered one replaces rather than adds (see the sink's ReplacingMergeTree).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

TraceStatus = Literal["ok", "error", "timeout", "cancelled", "skipped"]


def inputs_hash(node: str, version: str, params: Any) -> str:
    """sha256 of node, pinned version and the canonical JSON of the resolved params: the
    same key the step cache uses, so traces and cache entries join."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{node}\0{version}\0{canonical}".encode()).hexdigest()


class TraceEvent(BaseModel):
    run_id: str
    step_id: str
    item: int = -1
    """The `for_each` index, or -1 for a plain step."""
    attempt: int = 1
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
    retry_count: int = 0
    """Attempts before this one (attempt - 1)."""
    cache_hit: bool = False
    cost_tokens: int | None = None
    context: dict[str, str] = Field(default_factory=dict)
    workflow_id: str = ""
    workflow_version: int | None = None
    namespace: str = "default"
    replica: str = ""
    """The node service instance that answered (empty when none did)."""

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
