"""The JetStream stream trace events travel on, shared by publishers and the sink, and
the format of its messages.

File storage, so events the sink has not taken survive a NATS restart. A message carries
one or more events as JSON lines: a publisher under load packs what waits in its buffer
into messages of up to `MESSAGE_EVENTS` events / `MESSAGE_BYTES` bytes, since a JetStream
publish with its ack costs about as much for 500 events as for one (per-event messages top
out near 15k events/s from one Python process; see bench/trace_ingest.py). Each message
has a `Nats-Msg-Id` derived from the keys it holds, so a retried publish inside the
duplicate window is stored once; the sink deduplicates again, per event, on insert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any, NotRequired

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from reflection.events import LATER_FIELDS, TraceEvent

STREAM = "REFLUX_TRACES"
SUBJECT = "reflux.traces"
"""Events are published on `reflux.traces.<namespace>`."""
DUPLICATE_WINDOW = timedelta(minutes=2)
QUERY_SUBJECT = "reflux.reflection.sql"
"""The sink answers read-only SQL here (request/reply) when it owns an embedded engine."""


def subject_for(namespace: str) -> str:
    return f"{SUBJECT}.{namespace}"


MESSAGE_EVENTS = 500
MESSAGE_BYTES = 256 * 1024
"""Far below NATS's default 1 MiB max_payload; one event is bounded well below it (see
`TraceEvent`'s limits)."""


def message_id(run_id: str, step_id: str, item: int, attempt: int) -> str:
    """The `Nats-Msg-Id` of a message holding one event."""
    return f"{run_id}/{step_id}/{item}/{attempt}"


def encode(events: Sequence[TraceEvent]) -> list[tuple[str, str, bytes]]:
    """`events` as messages, (subject, Nats-Msg-Id, payload) each, in order; a message holds
    events of one namespace."""
    messages: list[tuple[str, str, bytes]] = []
    lines: list[bytes] = []
    keys: list[tuple[str, str, int, int]] = []
    namespace = ""
    size = 0
    for event in events:
        line = event.model_dump_json().encode()
        full = len(lines) >= MESSAGE_EVENTS or size + len(line) + 1 > MESSAGE_BYTES
        if lines and (full or event.namespace != namespace):
            messages.append(_message(namespace, keys, lines))
            lines, keys, size = [], [], 0
        namespace = event.namespace
        lines.append(line)
        keys.append(event.key)
        size += len(line) + 1
    if lines:
        messages.append(_message(namespace, keys, lines))
    return messages


def _message(
    namespace: str, keys: list[tuple[str, str, int, int]], lines: list[bytes]
) -> tuple[str, str, bytes]:
    if len(keys) == 1:
        return subject_for(namespace), message_id(*keys[0]), lines[0]
    digest = hashlib.sha256("\n".join(message_id(*key) for key in keys).encode()).hexdigest()
    return subject_for(namespace), f"batch/{len(keys)}/{digest[:40]}", b"\n".join(lines)


def _wire_type(name: str, field: Any) -> Any:
    kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return NotRequired[kind] if name in LATER_FIELDS else kind


WireEvent = TypedDict(  # type: ignore[misc]
    "WireEvent", {name: _wire_type(name, field) for name, field in TraceEvent.model_fields.items()}
)
"""An event as a message line holds it: every field of `TraceEvent`, all present (a
publisher writes them all) but those added since the first release (`LATER_FIELDS`), which
an older publisher leaves out. Validated into plain dicts, ~2.5x faster than into models."""
_LINES = TypeAdapter(list[WireEvent])
_LINE = TypeAdapter(WireEvent)


def decode(data: bytes) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The events of one message as dicts of `TraceEvent` fields, and a one-line problem
    for each line that is not an event."""
    try:  # the whole message at once; line by line only to find what is wrong
        whole: list[Mapping[str, Any]] = _LINES.validate_json(  # type: ignore[assignment]
            b"[" + data.replace(b"\n", b",") + b"]"
        )
        if whole:
            return whole, []
    except ValidationError:
        pass
    rows: list[Mapping[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_LINE.validate_json(line))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            problems.append(f"line {number}: {where + ': ' if where else ''}{error['msg']}")
    if not rows and not problems:
        problems.append("empty message")
    return rows, problems


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
