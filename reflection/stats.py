"""The questions `reflux stats`, `reflux runs show` and `reflux traces` ask of the traces,
as SQL plus parameters, so any caller runs them the same way (`reflection.sql.query`, or
`Warehouse.query` in-process).

Definitions, per node and version, over trace events in the window (skips excluded):
- count: attempts; error rate: attempts that ended `error` or `timeout` / count;
- retry rate: attempts after a step's first (attempt > 1) / count;
- cache hit rate: attempts answered from the cache / count;
- p50/p95/p99: exact quantiles of `latency_ms` (ClickHouse `quantileExact`: the value at
  0-based position floor(q * n) of the sorted latencies);
- top errors: the three most frequent error classes; cost: the sum of `cost_tokens`;
- metrics: per name a handler reported (`NodeContext.metric`), over the attempts that
  reported it: `count`, `mean`, and `p50`/`p95` as for latency.
Per workflow: runs, run duration (first start to last end of its events) p50/p95, and the
steps with the most failed attempts.

Scope: `namespace=None` counts every namespace; any string, even "", only that namespace's
events. `labels`: only events of runs carrying every one of these labels (a label a run
lacks reads as ""). Runs labelled `shadow=true` (replays that never write) are left out
unless `include_shadow`, or `labels` names `shadow` itself. Values are bound as query
parameters, never written into the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Query = tuple[str, dict[str, Any]]
SHADOW = ("shadow", "true")
"""The label of a shadow run, whose events default stats leave out."""


def _filters(
    since_seconds: float,
    node: str | None,
    workflow: str | None,
    namespace: str | None,
    labels: Mapping[str, str] | None = None,
    include_shadow: bool = False,
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
    labels = dict(labels or {})
    for i, (key, value) in enumerate(sorted(labels.items())):
        where.append(f"labels[{{label_key_{i}:String}}] = {{label_value_{i}:String}}")
        params[f"label_key_{i}"], params[f"label_value_{i}"] = key, value
    if not include_shadow and SHADOW[0] not in labels:
        where.append("labels[{shadow_key:String}] != {shadow_value:String}")
        params["shadow_key"], params["shadow_value"] = SHADOW
    return " AND ".join(where), params


def node_stats(
    since_seconds: float,
    node: str | None = None,
    workflow: str | None = None,
    *,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    include_shadow: bool = False,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace, labels, include_shadow)
    return (
        f"""
        SELECT
            * EXCEPT (metric_count, metric_mean, metric_p50, metric_p95),
            mapApply(
                (name, mean) -> (name, map(
                    'count', metric_count[name], 'mean', mean,
                    'p50', metric_p50[name], 'p95', metric_p95[name]
                )),
                metric_mean
            ) AS metrics
        FROM (
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
                sum(ifNull(cost_tokens, 0)) AS cost_tokens,
                sumMap(mapApply((k, v) -> (k, toFloat64(1)), metrics)) AS metric_count,
                avgMap(metrics) AS metric_mean,
                quantileExactMap(0.5)(metrics) AS metric_p50,
                quantileExactMap(0.95)(metrics) AS metric_p95
            FROM traces
            WHERE {where} AND status != 'skipped'
            GROUP BY node, node_version
        )
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
    labels: Mapping[str, str] | None = None,
    include_shadow: bool = False,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace, labels, include_shadow)
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
    labels: Mapping[str, str] | None = None,
    include_shadow: bool = False,
) -> Query:
    where, params = _filters(since_seconds, node, workflow, namespace, labels, include_shadow)
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
               workflow_version, namespace, retry_count, cost_tokens, metrics, context, labels
        FROM traces
        WHERE run_id = {run_id:String}
        ORDER BY start, step_id, item, attempt
        """,
        {"run_id": run_id},
    )
