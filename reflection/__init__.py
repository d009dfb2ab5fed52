"""Step traces to ClickHouse through JetStream, metrics, step result cache (built in the reflection issue)."""
