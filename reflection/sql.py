"""Read-only SQL on the traces, from any process, the same way whichever engine holds them.

With a ClickHouse server (`REFLUX_CLICKHOUSE_URL`) we ask it directly. The embedded engine
belongs to the trace sink's process alone, so without a server the question goes to the
sink over NATS (request/reply on `QUERY_SUBJECT`) and the sink runs it through the same
`Warehouse.query`; either way the caller gets the same `QueryResult` or a one-line
ServiceError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError

from infra import ServiceError, Settings, addresses
from reflection.stream import QUERY_SUBJECT
from reflection.warehouse import QueryResult, open_warehouse

TIMEOUT = 30.0
NO_SINK = "no trace sink is running (start it with `reflux up`)"


async def query(
    settings: Settings,
    sql: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    timeout: float = TIMEOUT,
    subject: str = QUERY_SUBJECT,
    nc: Client | None = None,
) -> QueryResult:
    """Run one read-only statement (SELECT, WITH, SHOW, DESCRIBE) on the traces.
    `{name:Type}` placeholders take their values from `parameters`. `nc`: a NATS connection
    to ask the sink through (a long-lived process passes its own; else one is opened)."""
    if settings.clickhouse.url is not None:
        return await asyncio.to_thread(_ask_server, settings, sql, parameters)
    request = json.dumps({"sql": sql, "parameters": dict(parameters or {})}, default=str)
    if nc is not None:
        return await _ask_sink(nc, request.encode(), timeout, subject)
    url = addresses(settings).nats
    try:
        own = await nats.connect(
            url,
            name="reflux-query",
            connect_timeout=min(timeout, 5),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=_quiet,
        )
    except Exception as exc:  # nats-py raises several unrelated types for "cannot connect"
        raise ServiceError(f"cannot reach NATS at {url} to ask the trace sink: {exc}") from None
    try:
        return await _ask_sink(own, request.encode(), timeout, subject)
    finally:
        await own.close()


def _ask_server(settings: Settings, sql: str, parameters: Mapping[str, Any] | None) -> QueryResult:
    with open_warehouse(settings) as warehouse:
        return warehouse.query(sql, parameters)


async def _ask_sink(nc: Client, request: bytes, timeout: float, subject: str) -> QueryResult:
    try:
        reply = await nc.request(subject, request, timeout=timeout)
    except NoRespondersError:
        raise ServiceError(NO_SINK) from None
    except TimeoutError:
        raise ServiceError(f"the trace sink did not answer within {timeout:g}s") from None
    body = json.loads(reply.data)
    if "error" in body:
        raise ServiceError(str(body["error"]))
    return QueryResult.model_validate(body)


async def _quiet(_: Exception) -> None:
    pass
