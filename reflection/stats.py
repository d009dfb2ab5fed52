"""The questions `reflux stats`, `reflux runs show` and `reflux traces` ask of the traces,
as SQL plus parameters, so any caller runs them the same way (`reflection.sql.query`, or
`Warehouse.query` in-process).

Definitions, per node and version, over trace events in the window (skips excluded):
- count: attempts; error rate: attempts that ended `error` or `timeout` / count;
- retry rate: attempts after a step's first (attempt > 1) / count;
- cache hit rate: attempts answered from the cache / count;
- p50/p95/p99: exact quantiles of `latency_ms` (ClickHouse `quantileExact`: the value at
  0-based position floor(q * n) of the sorted latencies);
- top errors: the three most frequent error classes; cost: the sum of `cost_tokens`.
Per workflow: runs, run duration (first start to last end of its events) p50/p95, and the
steps with the most failed attempts.

`namespace=None` counts every namespace; any string, even "", only that namespace's events.
"""

from __future__ import annotations

from typing import Any

Query = tuple[str, dict[str, Any]]


def _filters(
    since_seconds: float, node: str | None, workflow: str | None, namespace: str | None
) -> Query:
    where = ["start >= now64(3) - toIntervalMillisecond({since_ms:Int64})"]
    params: dict[str, Any] = {"since_ms": int(since_seconds * 1000)}
    if namespace is not None:  # a scope, whatever its name ("" too: it matches nothing)
        where.append("namespace = {namespace:String}")
        params["namespace"] = namespace
    if node:
        where.append("node = {node:String}")
        params["node"] = node
    if workflow:
        where.append("workflow_id = {workflow:String}")
        params["workflow"] = workflow
    return " AND ".join(where), params


def node_stats(
    since_seconds: float,
    node: str | None = None,
    workflow: str | None = None,
    *,
    namespace: str | None = None,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace)
    return (
        f"""
        SELECT
            node,
            node_version,
            count() AS count,
            countIf(status IN ('error', 'timeout')) / count() AS error_rate,
            quantileExact(0.5)(latency_ms) AS p50_ms,
            quantileExact(0.95)(latency_ms) AS p95_ms,
            quantileExact(0.99)(latency_ms) AS p99_ms,
            countIf(attempt > 1) / count() AS retry_rate,
            countIf(cache_hit) / count() AS cache_hit_rate,
            topKIf(3)(assumeNotNull(error_class), error_class IS NOT NULL) AS top_errors,
            sum(ifNull(cost_tokens, 0)) AS cost_tokens
        FROM traces
        WHERE {where} AND status != 'skipped'
        GROUP BY node, node_version
        ORDER BY node, node_version
        """,
        params,
    )


def workflow_stats(
    since_seconds: float,
    node: str | None = None,
    workflow: str | None = None,
    *,
    namespace: str | None = None,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace)
    return (
        f"""
        SELECT
            workflow_id,
            count() AS runs,
            quantileExact(0.5)(duration_ms) AS p50_ms,
            quantileExact(0.95)(duration_ms) AS p95_ms
        FROM (
            SELECT workflow_id, run_id,
                   dateDiff('millisecond', min(start), max(`end`)) AS duration_ms
            FROM traces
            WHERE {where}
            GROUP BY workflow_id, run_id
        )
        GROUP BY workflow_id
        ORDER BY workflow_id
        """,
        params,
    )


def failing_steps(
    since_seconds: float,
    node: str | None = None,
    workflow: str | None = None,
    per: int = 3,
    *,
    namespace: str | None = None,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace)
    params["per"] = per
    return (
        f"""
        SELECT workflow_id, step_id,
               countIf(status IN ('error', 'timeout')) AS failures,
               count() AS attempts
        FROM traces
        WHERE {where} AND status != 'skipped'
        GROUP BY workflow_id, step_id
        HAVING failures > 0
        ORDER BY workflow_id, failures DESC, step_id
        LIMIT {{per:UInt32}} BY workflow_id
        """,
        params,
    )


def run_traces(run_id: str) -> Query:
    return (
        """
        SELECT run_id, step_id, item, attempt, node, node_version, status, start, `end`, latency_ms,
               cache_hit, error_class, error, replica, inputs_hash, workflow_id,
               workflow_version, namespace, retry_count, cost_tokens, metrics, context
        FROM traces
        WHERE run_id = {run_id:String}
        ORDER BY start, step_id, item, attempt
        """,
        {"run_id": run_id},
    )
