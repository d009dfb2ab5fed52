"""Step traces to ClickHouse through JetStream, metrics and a step result cache (a later issue)."""
