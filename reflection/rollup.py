"""What the Critic reads instead of every attempt: two tables ClickHouse keeps from `traces`
as events arrive (materialized views), so a question over a window of traffic reads a few
thousand rows, not all of them. The raw table is ordered by run, so a window or a step
prunes nothing there and every column a query names is read for every row: at 1,000,000
attempts, the Critic's profile of every step took ~300 ms over `traces` and takes ~40 ms
over the rollup.

`trace_minutes` (`TABLE`): every step's attempts by the minute. One row per minute and per
what the Critic splits by (`KEY`): workflow, its version, step, node and version, replica,
the `for_each` item (in bands: 0–9 as they are, then decades), attempt number, status,
error class, the node's `retryable` flag and HTTP status (failures only), whether it was a
cache hit, whether it carried an inputs hash (`hashed`: events from before hashing, or from
outside a node call, have none), and whether the run was live traffic (`live`: not a shadow
replay, no `experiment` label). What it holds of them (`VALUES`): counts, latency sums, a
t-digest of the latency, the slowest run, up to `EXAMPLES` run ids, distinct inputs
(HyperLogLog, 2.5 kB a row), a reservoir of `SAMPLE` (latency, run id) pairs, and one of
`ATTRIBUTES` attempts' labels, context and metric bands (`label.tenant=t1`; a metric's value
in decades: `metric.bytes=1000-9999`). A sample, not counts: exact counts of every
`key=value` grow a row with every distinct value (a label unique to each run would make
every row as long as its runs), where a reservoir keeps a row's size whatever the labels
hold; each kept attempt stands for `attempts / kept` of its row's, so a share is estimated
without bias, and exactly while a row has at most `ATTRIBUTES` attempts.

`trace_retries` (`RETRIES`): the failed attempts and the retries after them, narrow and
ordered by step and minute: the one question a rollup cannot answer (a call's attempts side
by side: how long a retried call took to recover) reads these, a few percent of the
attempts, instead of `traces`.

Counts are of inserted rows: an event inserted twice counts twice in the rollup (the raw
table and `trace_retries` collapse the copy). The sink inserts a redelivered batch's events
only when they are not stored yet (`reflection.sink`), so a copy reaches the rollup only
when one event is published twice (a publish retried past JetStream's duplicate window) or
two workers trace the same attempt (a lost worker's local step run again under its attempt
number).
"""

from __future__ import annotations

TABLE = "trace_minutes"
RETRIES = "trace_retries"
MERGED_BY_READERS = frozenset({TABLE, RETRIES})
"""Tables FINAL changes no reader's answer of, only doubles its cost (`Warehouse.query`
leaves it off for a statement that reads nothing else): the rollup's readers merge its rows
themselves (GROUP BY with the `-Merge` combinators, or sums), and `trace_retries`' reader
takes a call's attempts together (latest failure, earliest success), which a copy of one
does not move. A row of either may be partial or a copy until its parts merge: count rows
of neither."""
EXAMPLES = 10
"""Run ids kept per row (the Critic's `example_runs` is at most this)."""
SAMPLE = 64
"""(latency, run id) pairs kept per row, a reservoir (`groupArraySample`): a merge of rows
keeps at most this many again, so a question that needs more (the judge's samples) merges
per minute and takes from each."""
SAMPLE_SEED = 1
LEAST_MS = 0.001
"""Latencies are floored here before their log (a cache hit may report 0 ms)."""

BAND = """multiIf({x} < 0, 'none', {x} < 10, toString({x}),
        concat(toString(toInt64(exp10(floor(log10({x}))))), '-',
               toString(toInt64(exp10(floor(log10({x})) + 1)) - 1)))"""
"""An item index in bands: -1 (a plain step) "none", 0–9 as they are, then decades
("10-99", "1000-9999")."""
METRIC_BAND = """multiIf({x} < 0, 'below 0', {x} < 1, '0-1',
        concat(toString(toInt64(exp10(floor(log10({x}))))), '-',
               toString(toInt64(exp10(floor(log10({x})) + 1)) - 1)))"""
"""A metric's value in decades: "below 0", "0-1" (zero and fractions), "1-9", "10-99", …"""
LATENCY = "if(isFinite(latency_ms), latency_ms, 0)"
ATTRIBUTES = 8
"""Attempts whose attributes a row keeps, a reservoir (`groupArraySample`): what the
contrast and drift's labels are estimated from, each kept attempt standing for
`attempts / kept` of the row's. Exact while a row holds at most this many attempts."""
KEY_CHARS = 100
VALUE_CHARS = 200
"""An attribute's key and value are cut here: a long context value says nothing more in a
contrast, and a row stays small whatever nodes report."""


def _pairs(prefix: str, column: str, value: str = "{column}[k]") -> str:
    """`prefix.key=value` of every entry of a map column, key and value cut apart (so the
    `=` stays), with a pair only once (two keys cut to the same text are one)."""
    pair = value.format(column=column)
    return (
        f"arrayMap(k -> concat('{prefix}.', substring(replaceAll(k, '=', ':'), 1, {KEY_CHARS}),"
        f" '=', substring({pair}, 1, {VALUE_CHARS})), mapKeys({column}))"
    )


ATTEMPT_ATTRIBUTES = (
    f"arrayDistinct(arrayConcat({_pairs('label', 'labels')}, {_pairs('context', 'context')},"
    f" {_pairs('metric', 'metrics', METRIC_BAND.format(x='{column}[k]'))}))"
)
"""One attempt's attributes, each once: `label.<key>=value`, `context.<key>=value`, and
`metric.<name>=<decade>` (a metric's value in decades). A key's own `=` reads as `:`, so a
pair splits at its first `=` into key and value."""
KEPT = "finalizeAggregation(attributes)"
"""A row's kept attempts, an array of their attributes; readers name it `kept`, then:"""
KEPT_WEIGHTS = "arrayFlatten(arrayMap(a -> arrayMap(p -> attempts / length(kept), a), kept))"
"""The weight of each pair of `arrayFlatten(kept)`: its attempt stands for `attempts / kept`
of the row's."""
KEPT_SPREAD = "attempts * attempts / length(kept)"
"""Summed over rows, Σ attempts² / kept: a share estimated from kept attempts is worth as
many independent attempts as (Σ attempts)² over this (Kish's effective sample size)."""


KEY: tuple[tuple[str, str, str], ...] = (
    ("minute", "DateTime('UTC')", "toStartOfMinute(start)"),
    ("namespace", "LowCardinality(String)", "namespace"),
    ("workflow_id", "LowCardinality(String)", "workflow_id"),
    ("workflow_version", "Int64", "ifNull(workflow_version, -1)"),
    ("step_id", "LowCardinality(String)", "step_id"),
    ("live", "Bool", "labels['shadow'] != 'true' AND NOT mapContains(labels, 'experiment')"),
    ("node", "LowCardinality(String)", "node"),
    ("node_version", "LowCardinality(String)", "node_version"),
    ("replica", "LowCardinality(String)", "replica"),
    ("item_band", "LowCardinality(String)", BAND.format(x="item")),
    ("attempt", "Int64", "attempt"),
    ("status", "LowCardinality(String)", "status"),
    ("error_class", "LowCardinality(String)", "ifNull(error_class, '')"),
    ("retryable", "LowCardinality(String)", "if(status = 'ok', '', context['retryable'])"),
    ("http_status", "LowCardinality(String)", "if(status = 'ok', '', context['status'])"),
    ("cache_hit", "Bool", "cache_hit"),
    ("hashed", "Bool", "inputs_hash != ''"),
)
"""(column, type, expression over `traces`) of what a row is one of; the sort key."""
VALUES: tuple[tuple[str, str, str], ...] = (
    ("attempts", "SimpleAggregateFunction(sum, UInt64)", "count()"),
    ("latency_sum", "SimpleAggregateFunction(sum, Float64)", f"sum({LATENCY})"),
    ("log_latency_sum", "SimpleAggregateFunction(sum, Float64)",
     f"sum(log(greatest({LATENCY}, {LEAST_MS})))"),
    ("latency_max", "SimpleAggregateFunction(max, Float64)", f"max({LATENCY})"),
    ("first_start", "SimpleAggregateFunction(min, DateTime64(3, 'UTC'))", "min(start)"),
    ("last_start", "SimpleAggregateFunction(max, DateTime64(3, 'UTC'))", "max(start)"),
    ("retry_after_s", "SimpleAggregateFunction(max, Float64)",
     "max(toFloat64OrZero(context['retry_after']))"),
    ("latency", "AggregateFunction(quantilesTDigest(0.5), Float64)",
     "quantilesTDigestState(0.5)(latency_ms)"),
    ("slowest", "AggregateFunction(argMax, String, Float64)", "argMaxState(run_id, latency_ms)"),
    ("runs", f"AggregateFunction(groupUniqArray({EXAMPLES}), String)",
     f"groupUniqArrayState({EXAMPLES})(run_id)"),
    ("inputs", "AggregateFunction(uniqHLL12, String)", "uniqHLL12State(inputs_hash)"),
    ("sample",
     f"AggregateFunction(groupArraySample({SAMPLE}, {SAMPLE_SEED}), Tuple(Float64, String))",
     f"groupArraySampleState({SAMPLE}, {SAMPLE_SEED})((latency_ms, run_id))"),
    ("attributes",
     f"AggregateFunction(groupArraySample({ATTRIBUTES}, {SAMPLE_SEED}), Array(String))",
     f"groupArraySampleState({ATTRIBUTES}, {SAMPLE_SEED})({ATTEMPT_ATTRIBUTES})"),
)  # fmt: skip
"""(column, type, aggregate over `traces`) of what a row holds of its attempts."""

ORDER = ", ".join(
    ("namespace", "workflow_id", "step_id", "minute")
    + tuple(k for k, _, _ in KEY if k not in ("minute", "namespace", "workflow_id", "step_id"))
)
"""Steps first, then time: a window of one step reads only its granules."""

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    {", ".join(f"{name} {kind}" for name, kind, _ in KEY + VALUES)}
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY ({ORDER})
"""

ROLL = f"""
SELECT {", ".join(f"{expression} AS {name}" for name, _, expression in KEY + VALUES)}
FROM {{source}}
GROUP BY {", ".join(name for name, _, _ in KEY)}
"""
"""The rollup of the attempts in `{source}`: what the view runs on every insert into
`traces`, and the backfill over the rows stored before it."""

RETRIED = "status IN ('error', 'timeout') OR attempt > 1"
"""The attempts `trace_retries` keeps: failures, and every attempt after a call's first."""
RETRIES_KEY = ("namespace", "workflow_id", "step_id", "minute", "run_id", "item", "attempt")
CREATE_RETRIES = f"""
CREATE TABLE IF NOT EXISTS {RETRIES} (
    {", ".join(f"{name} {kind}" for name, kind, _ in KEY[:6])},
    run_id String,
    item Int64,
    attempt Int64,
    status LowCardinality(String),
    start DateTime64(3, 'UTC'),
    `end` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY ({", ".join(RETRIES_KEY)})
"""
"""Keyed by the event (run, step, item, attempt) as `traces` is, so a copy collapses."""
PICK = f"""
SELECT {", ".join(f"{expression} AS {name}" for name, _, expression in KEY[:6])},
       run_id, item, attempt, status, start, `end`
FROM {{source}}
WHERE {RETRIED}
"""

STATEMENTS = (
    # The rollup as this code has it, rebuilt from `traces` (migration 4; migration 3 made
    # an earlier shape, frozen in `schema/`): a change here is a new migration that runs
    # these again, and the text of an applied one never changes.
    f"DROP VIEW IF EXISTS {TABLE}_mv",
    f"DROP TABLE IF EXISTS {TABLE}",
    CREATE_TABLE,
    CREATE_RETRIES,
    # Migrations run before the sink inserts anything, so nothing is written between these
    # statements; a migration interrupted halfway runs them all again.
    f"TRUNCATE TABLE IF EXISTS {TABLE}",
    f"TRUNCATE TABLE IF EXISTS {RETRIES}",
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS {TABLE}_mv TO {TABLE} AS"
    f" {ROLL.format(source='traces')}",
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS {RETRIES}_mv TO {RETRIES} AS"
    f" {PICK.format(source='traces')}",
    f"INSERT INTO {TABLE} {ROLL.format(source='traces FINAL')}",
    f"INSERT INTO {RETRIES} {PICK.format(source='traces FINAL')}",
)
