"""Reflection: what happened, kept where it can be asked about.

- `events`: `TraceEvent`, one attempt of one step (sensitive keys redacted by `infra.redact`).
- `stream`: the JetStream stream traces travel on and its message format.
- `publisher`: buffered, never-blocking publishing from the worker.
- `sink`: the trace sink, JetStream → ClickHouse, and the query door to an embedded engine.
- `warehouse`: the ClickHouse schema, inserts and read-only queries (chdb or a server).
- `query`: read-only SQL from any process; `stats`: the questions the CLI asks.
- `cache`: the step result cache in a NATS key-value bucket.

Modules are imported one by one (the warehouse pulls in clickhouse-connect, ~0.3 s), so
this package exports nothing itself.
"""
