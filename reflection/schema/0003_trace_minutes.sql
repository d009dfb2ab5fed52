
CREATE TABLE IF NOT EXISTS trace_minutes (
    minute DateTime('UTC'), namespace LowCardinality(String), workflow_id LowCardinality(String), workflow_version Int64, step_id LowCardinality(String), live Bool, node LowCardinality(String), node_version LowCardinality(String), replica LowCardinality(String), item_band LowCardinality(String), attempt Int64, status LowCardinality(String), error_class LowCardinality(String), retryable LowCardinality(String), http_status LowCardinality(String), cache_hit Bool, hashed Bool, attempts SimpleAggregateFunction(sum, UInt64), latency_sum SimpleAggregateFunction(sum, Float64), log_latency_sum SimpleAggregateFunction(sum, Float64), latency_max SimpleAggregateFunction(max, Float64), first_start SimpleAggregateFunction(min, DateTime64(3, 'UTC')), last_start SimpleAggregateFunction(max, DateTime64(3, 'UTC')), retry_after_s SimpleAggregateFunction(max, Float64), latency AggregateFunction(quantilesTDigest(0.5), Float64), slowest AggregateFunction(argMax, String, Float64), runs AggregateFunction(groupUniqArray(10), String), inputs AggregateFunction(uniqHLL12, String), sample AggregateFunction(groupArraySample(64, 1), Tuple(Float64, String)), label_pairs SimpleAggregateFunction(sumMap, Tuple(Array(String), Array(UInt64))), context_pairs SimpleAggregateFunction(sumMap, Tuple(Array(String), Array(UInt64))), metric_bands SimpleAggregateFunction(sumMap, Tuple(Array(String), Array(UInt64)))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (namespace, workflow_id, step_id, minute, workflow_version, live, node, node_version, replica, item_band, attempt, status, error_class, retryable, http_status, cache_hit, hashed)

;

CREATE TABLE IF NOT EXISTS trace_retries (
    minute DateTime('UTC'), namespace LowCardinality(String), workflow_id LowCardinality(String), workflow_version Int64, step_id LowCardinality(String), live Bool,
    run_id String,
    item Int64,
    attempt Int64,
    status LowCardinality(String),
    start DateTime64(3, 'UTC'),
    `end` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (namespace, workflow_id, step_id, minute, run_id, item, attempt)

;
TRUNCATE TABLE IF EXISTS trace_minutes
;
TRUNCATE TABLE IF EXISTS trace_retries
;
CREATE MATERIALIZED VIEW IF NOT EXISTS trace_minutes_mv TO trace_minutes AS 
SELECT toStartOfMinute(start) AS minute, namespace AS namespace, workflow_id AS workflow_id, ifNull(workflow_version, -1) AS workflow_version, step_id AS step_id, labels['shadow'] != 'true' AND NOT mapContains(labels, 'experiment') AS live, node AS node, node_version AS node_version, replica AS replica, multiIf(item < 0, 'none', item < 10, toString(item),
        concat(toString(toInt64(exp10(floor(log10(item))))), '-',
               toString(toInt64(exp10(floor(log10(item)) + 1)) - 1))) AS item_band, attempt AS attempt, status AS status, ifNull(error_class, '') AS error_class, if(status = 'ok', '', context['retryable']) AS retryable, if(status = 'ok', '', context['status']) AS http_status, cache_hit AS cache_hit, inputs_hash != '' AS hashed, count() AS attempts, sum(if(isFinite(latency_ms), latency_ms, 0)) AS latency_sum, sum(log(greatest(if(isFinite(latency_ms), latency_ms, 0), 0.001))) AS log_latency_sum, max(if(isFinite(latency_ms), latency_ms, 0)) AS latency_max, min(start) AS first_start, max(start) AS last_start, max(toFloat64OrZero(context['retry_after'])) AS retry_after_s, quantilesTDigestState(0.5)(latency_ms) AS latency, argMaxState(run_id, latency_ms) AS slowest, groupUniqArrayState(10)(run_id) AS runs, uniqHLL12State(inputs_hash) AS inputs, groupArraySampleState(64, 1)((latency_ms, run_id)) AS sample, sumMap(arrayMap(k -> concat(k, '=', labels[k]), mapKeys(labels)), arrayResize(CAST([], 'Array(UInt64)'), length(labels), toUInt64(1))) AS label_pairs, sumMap(arrayMap(k -> concat(k, '=', context[k]), mapKeys(context)), arrayResize(CAST([], 'Array(UInt64)'), length(context), toUInt64(1))) AS context_pairs, sumMap(arrayMap(k -> concat(k, '=', multiIf(metrics[k] < 0, 'below 0', metrics[k] < 1, '0-1',
        concat(toString(toInt64(exp10(floor(log10(metrics[k]))))), '-',
               toString(toInt64(exp10(floor(log10(metrics[k])) + 1)) - 1)))), mapKeys(metrics)), arrayResize(CAST([], 'Array(UInt64)'), length(metrics), toUInt64(1))) AS metric_bands
FROM traces
GROUP BY minute, namespace, workflow_id, workflow_version, step_id, live, node, node_version, replica, item_band, attempt, status, error_class, retryable, http_status, cache_hit, hashed

;
CREATE MATERIALIZED VIEW IF NOT EXISTS trace_retries_mv TO trace_retries AS 
SELECT toStartOfMinute(start) AS minute, namespace AS namespace, workflow_id AS workflow_id, ifNull(workflow_version, -1) AS workflow_version, step_id AS step_id, labels['shadow'] != 'true' AND NOT mapContains(labels, 'experiment') AS live,
       run_id, item, attempt, status, start, `end`
FROM traces
WHERE status IN ('error', 'timeout') OR attempt > 1

;
INSERT INTO trace_minutes 
SELECT toStartOfMinute(start) AS minute, namespace AS namespace, workflow_id AS workflow_id, ifNull(workflow_version, -1) AS workflow_version, step_id AS step_id, labels['shadow'] != 'true' AND NOT mapContains(labels, 'experiment') AS live, node AS node, node_version AS node_version, replica AS replica, multiIf(item < 0, 'none', item < 10, toString(item),
        concat(toString(toInt64(exp10(floor(log10(item))))), '-',
               toString(toInt64(exp10(floor(log10(item)) + 1)) - 1))) AS item_band, attempt AS attempt, status AS status, ifNull(error_class, '') AS error_class, if(status = 'ok', '', context['retryable']) AS retryable, if(status = 'ok', '', context['status']) AS http_status, cache_hit AS cache_hit, inputs_hash != '' AS hashed, count() AS attempts, sum(if(isFinite(latency_ms), latency_ms, 0)) AS latency_sum, sum(log(greatest(if(isFinite(latency_ms), latency_ms, 0), 0.001))) AS log_latency_sum, max(if(isFinite(latency_ms), latency_ms, 0)) AS latency_max, min(start) AS first_start, max(start) AS last_start, max(toFloat64OrZero(context['retry_after'])) AS retry_after_s, quantilesTDigestState(0.5)(latency_ms) AS latency, argMaxState(run_id, latency_ms) AS slowest, groupUniqArrayState(10)(run_id) AS runs, uniqHLL12State(inputs_hash) AS inputs, groupArraySampleState(64, 1)((latency_ms, run_id)) AS sample, sumMap(arrayMap(k -> concat(k, '=', labels[k]), mapKeys(labels)), arrayResize(CAST([], 'Array(UInt64)'), length(labels), toUInt64(1))) AS label_pairs, sumMap(arrayMap(k -> concat(k, '=', context[k]), mapKeys(context)), arrayResize(CAST([], 'Array(UInt64)'), length(context), toUInt64(1))) AS context_pairs, sumMap(arrayMap(k -> concat(k, '=', multiIf(metrics[k] < 0, 'below 0', metrics[k] < 1, '0-1',
        concat(toString(toInt64(exp10(floor(log10(metrics[k]))))), '-',
               toString(toInt64(exp10(floor(log10(metrics[k])) + 1)) - 1)))), mapKeys(metrics)), arrayResize(CAST([], 'Array(UInt64)'), length(metrics), toUInt64(1))) AS metric_bands
FROM traces FINAL
GROUP BY minute, namespace, workflow_id, workflow_version, step_id, live, node, node_version, replica, item_band, attempt, status, error_class, retryable, http_status, cache_hit, hashed

;
INSERT INTO trace_retries 
SELECT toStartOfMinute(start) AS minute, namespace AS namespace, workflow_id AS workflow_id, ifNull(workflow_version, -1) AS workflow_version, step_id AS step_id, labels['shadow'] != 'true' AND NOT mapContains(labels, 'experiment') AS live,
       run_id, item, attempt, status, start, `end`
FROM traces FINAL
WHERE status IN ('error', 'timeout') OR attempt > 1
