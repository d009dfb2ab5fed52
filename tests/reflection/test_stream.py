"""The trace stream's message format: events packed into JSON-lines messages by count, size
and namespace, with stable message ids, and decoded back with bad lines named."""

from __future__ import annotations

from datetime import UTC, datetime

from reflection.events import ERROR_CHARS, MAP_ENTRIES, TraceEvent
from reflection.stream import MESSAGE_BYTES, MESSAGE_EVENTS, decode, encode, message_id

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def event(n: int, namespace: str = "default", **fields) -> TraceEvent:
    return TraceEvent(
        run_id="r",
        step_id=f"s{n}",
        node="core.transform",
        node_version="1.0.0",
        status="ok",
        start=NOW,
        end=NOW,
        namespace=namespace,
        **fields,
    )


def test_one_event_is_one_line_named_by_its_key():
    [(subject, msg_id, payload)] = encode([event(1, "prod")])
    assert subject == "reflux.traces.prod" and msg_id == message_id("r", "s1", -1, 1)
    rows, problems = decode(payload)
    assert problems == [] and [TraceEvent.model_validate(r) for r in rows] == [event(1, "prod")]


def test_many_events_pack_by_count_and_namespace_in_order():
    events = [event(n) for n in range(MESSAGE_EVENTS + 10)] + [event(9999, "other")]
    messages = encode(events)
    assert [len(decode(m[2])[0]) for m in messages] == [MESSAGE_EVENTS, 10, 1]
    assert [m[0] for m in messages] == ["reflux.traces.default"] * 2 + ["reflux.traces.other"]
    decoded = [TraceEvent.model_validate(r) for m in messages for r in decode(m[2])[0]]
    assert decoded == events
    assert [m[1] for m in encode(events)] == [m[1] for m in messages]  # ids are stable
    assert len({m[1] for m in messages}) == 3


def test_messages_stay_under_the_size_bound():
    big = [
        event(n, error="x" * 3000, context={f"k{i}": "v" * 900 for i in range(20)})
        for n in range(40)
    ]
    messages = encode(big)
    assert len(messages) > 1 and all(len(m[2]) <= MESSAGE_BYTES for m in messages)
    assert sum(len(decode(m[2])[0]) for m in messages) == 40


def test_one_event_is_bounded_by_cutting_not_refusing():
    huge = event(1, error="e" * 100_000, context={str(i): "v" * 5000 for i in range(500)})
    assert len(huge.error or "") == ERROR_CHARS + 1 and len(huge.context) == MAP_ENTRIES
    assert len(huge.model_dump_json()) < MESSAGE_BYTES


def test_bad_lines_are_named_and_good_ones_kept():
    good = event(1).model_dump_json()
    too_big = good.replace('"item":-1', '"item":' + "9" * 30)
    payload = "\n".join([good, "not json", '{"run_id": "x"}', too_big]).encode()
    rows, problems = decode(payload)
    assert [r["step_id"] for r in rows] == ["s1"]
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 4"]
    assert "item: Input should be less than or equal to 9223372036854775807" in problems[2]
    assert decode(b"") == ([], ["empty message"])
