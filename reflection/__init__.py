"""Reflection: what happened, kept where it can be asked about.

- `events`: `TraceEvent`, one attempt of one step (sensitive keys redacted by `infra.redaction`).
- `stream`: the JetStream stream traces travel on and its message format.
- `publisher`: buffered, never-blocking publishing from the worker.
- `sink`: the trace sink, JetStream → ClickHouse, and the query door to an embedded engine.
- `warehouse`: the ClickHouse schema, inserts and read-only queries (chdb or a server);
  `rollup`: `trace_minutes`, the attempts by the minute that the Critic reads.
- `query`: read-only SQL from any process (answered with a `QueryResult`); `stats`: the
  questions the CLI asks.
- `cache`: the step result cache in a NATS key-value bucket.

Modules are imported one by one (the warehouse pulls in clickhouse-connect, ~0.3 s), so
this package exports nothing itself.
"""

from infra import lazy

__all__ = [
    "IN_FLIGHT",
    "QueryResult",
    "StepCache",
    "TraceEvent",
    "TracePublisher",
    "TraceStatus",
    "encode",
    "inputs_hash",
    "message_id",
    "open_warehouse",
    "publisher_stats",
    "query",
    "rollup",
    "run_sink",
    "sink_backlog",
    "stats",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "reflection.cache": ["StepCache"],
        "reflection.events": ["TraceEvent", "TraceStatus", "inputs_hash"],
        "reflection.publisher": ["IN_FLIGHT", "TracePublisher", "publisher_stats"],
        "reflection.sink": ["run_sink", "sink_backlog"],
        "reflection.sql": ["query"],
        "reflection.stream": ["encode", "message_id"],
        "reflection.warehouse": ["QueryResult", "open_warehouse"],
    },
    modules=["rollup", "stats"],
)
