"""Trace events and redaction: no secret reaches a trace, at any depth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from infra.redaction import REDACTED, is_sensitive, redact
from reflection.events import TraceEvent, inputs_hash


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "Authorization",
        "X-Api-Key",
        "api_key",
        "apiKey",
        "client_secret",
        "accessToken",
        "refresh-token",
        "Set-Cookie",
        "private.key",
        "AWS_SECRET_ACCESS_KEY",
    ],
)
def test_sensitive_keys(key):
    assert is_sensitive(key)


@pytest.mark.parametrize(
    "key", ["tokens_used", "cost_tokens", "url", "keyboard", "author", "monkey", "passed"]
)
def test_ordinary_keys(key):
    assert not is_sensitive(key)


def test_redaction_at_depth_and_by_value():
    value = {
        "url": "https://api.example.com/?q=1",
        "headers": {"Authorization": "Bearer abc", "Accept": "json"},
        "nested": [{"deeper": {"list": [{"password": "hunter2", "ok": 1}]}}],
        "note": "the key is s3cr3t-value, keep it safe",
        "tokens_used": 12,
    }
    clean = redact(value, secrets=["s3cr3t-value", "abc"])  # "abc" is too short to hunt
    assert clean["headers"] == {"Authorization": REDACTED, "Accept": "json"}
    assert clean["nested"][0]["deeper"]["list"][0] == {"password": REDACTED, "ok": 1}
    assert clean["note"] == f"the key is {REDACTED}, keep it safe"
    assert clean["tokens_used"] == 12 and clean["url"] == value["url"]
    assert value["headers"]["Authorization"] == "Bearer abc"  # the input is not changed
    assert "hunter2" not in str(clean) and "s3cr3t-value" not in str(clean)


def test_redaction_stops_at_a_depth_bound():
    deep: dict = {}
    cursor = deep
    for _ in range(100):
        cursor["x"] = {}
        cursor = cursor["x"]
    assert "[too deep]" in str(redact(deep))


def test_inputs_hash_is_canonical():
    a = inputs_hash("core.transform", "1.0.0", {"b": 1, "a": [1, 2]})
    assert a == inputs_hash("core.transform", "1.0.0", {"a": [1, 2], "b": 1})
    assert a != inputs_hash("core.transform", "1.0.1", {"a": [1, 2], "b": 1})
    assert len(a) == 64


def test_timed_event_computes_latency_and_retries():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    event = TraceEvent.timed(
        start,
        start + timedelta(milliseconds=250),
        run_id="r",
        step_id="s",
        attempt=3,
        node="core.transform",
        node_version="1.0.0",
        status="ok",
    )
    assert event.latency_ms == 250 and event.retry_count == 2
    assert event.key == ("r", "s", -1, 3)
    assert TraceEvent.model_validate_json(event.model_dump_json()) == event


def test_figures_that_are_not_finite_are_left_out():
    now = datetime.now(UTC)
    event = TraceEvent(run_id="r", step_id="s", node="n", node_version="1.0.0", status="ok",
                       start=now, end=now,
                       metrics={"nan": float("nan"), "ok": 0.5, "inf": float("-inf")})  # fmt: skip
    assert event.metrics == {"ok": 0.5}
