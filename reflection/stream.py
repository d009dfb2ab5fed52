"""The JetStream stream trace events travel on, shared by publishers and the sink.

File storage, so events the sink has not taken survive a NATS restart. Each event is
published with `Nats-Msg-Id` = its key, so a retried publish inside the duplicate window
is stored once; the sink deduplicates again on insert for anything older.
"""

from __future__ import annotations

from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

STREAM = "REFLUX_TRACES"
SUBJECT = "reflux.traces"
"""Events are published on `reflux.traces.<namespace>`."""
DUPLICATE_WINDOW = timedelta(minutes=2)
QUERY_SUBJECT = "reflux.reflection.query"
"""The sink answers read-only SQL here (request/reply) when it owns an embedded engine."""


def subject_for(namespace: str) -> str:
    return f"{SUBJECT}.{namespace}"


def message_id(run_id: str, step_id: str, item: int, attempt: int) -> str:
    return f"{run_id}/{step_id}/{item}/{attempt}"


async def ensure_stream(js: JetStreamContext, max_age: timedelta) -> None:
    """Create the stream if missing (idempotent; safe from several processes)."""
    config = StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age.total_seconds(),
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
    )
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
