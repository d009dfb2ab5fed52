"""`reflux stats | runs show | traces | sql | cache | reflection sink`: what the traces say."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from infra import Settings
from reflux.cli.output import EXIT_INVALID, EXIT_OK, err, nats_connection, out, out_json
from reflux.cli.stack import signal_ready


async def cmd_sink(settings: Settings, args: argparse.Namespace) -> int:
    from reflection import run_sink

    err("trace sink: consuming reflux.traces.> into ClickHouse")
    await run_sink(settings, signal_ready)
    return EXIT_OK


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.0f}ms" if value < 10_000 else f"{value / 1000:.1f}s"


def _pct(value: Any) -> str:
    return f"{float(value) * 100:.1f}%"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{float(value):.4g}"


def _figures(metrics: dict[str, Any] | None) -> str:
    """An attempt's metrics as `name=value` pairs."""
    return " ".join(f"{k}={_number(v)}" for k, v in sorted((metrics or {}).items()))


async def cmd_stats(settings: Settings, args: argparse.Namespace) -> int:
    from infra import parse_duration
    from orchestrator import parse_pairs, table
    from reflection import query, stats
    from reflux.cli.remote import remote

    since = parse_duration(args.since)
    labels = parse_pairs(args.label or [])  # a SpecError: one line, exit 2
    if (api := remote(settings)) is not None:
        async with api:
            params: dict[str, Any] = {
                "since": args.since,
                "node": args.node,
                "workflow": args.workflow,
                "label": [f"{k}:{v}" for k, v in labels.items()] or None,
                "include_shadow": "true" if args.include_shadow else None,
            }
            found = await api.call(
                "GET", "/stats", params={k: v for k, v in params.items() if v is not None}
            )
        nodes, flows, failing = found["nodes"], found["workflows"], found["failing_steps"]
    else:
        scope = (since, args.node, args.workflow)
        scoped: dict[str, Any] = {"labels": labels, "include_shadow": args.include_shadow}
        nodes = (await query(settings, *stats.node_stats(*scope, **scoped))).records()
        flows = (await query(settings, *stats.workflow_stats(*scope, **scoped))).records()
        failing = (await query(settings, *stats.failing_steps(*scope, **scoped))).records()
    if args.json:
        out_json({"nodes": nodes, "workflows": flows, "failing_steps": failing})
        return EXIT_OK
    if not nodes and not flows:
        out(f"no traces in the last {args.since}")
        return EXIT_OK
    rows = [
        ("NODE", "VERSION", "COUNT", "ERRORS", "P50", "P95", "P99", "RETRIES", "CACHE",
         "TOKENS", "TOP ERRORS"),
    ]  # fmt: skip
    for n in nodes:
        rows.append(
            (
                n["node"],
                n["node_version"],
                str(n["count"]),
                _pct(n["error_rate"]),
                _ms(n["p50_ms"]),
                _ms(n["p95_ms"]),
                _ms(n["p99_ms"]),
                _pct(n["retry_rate"]),
                _pct(n["cache_hit_rate"]),
                str(n["cost_tokens"]),
                ", ".join(n["top_errors"]) or "-",
            )
        )
    out(table(rows))
    measured = [
        (n["node"], n["node_version"], name, figures)
        for n in nodes
        for name, figures in sorted((n.get("metrics") or {}).items())
    ]
    if measured:
        out("")
        rows = [("NODE", "VERSION", "METRIC", "COUNT", "MEAN", "P50", "P95")]
        for node, version, name, f in measured:
            rows.append(
                (node, version, name, f"{f['count']:.0f}", _number(f["mean"]),
                 _number(f["p50"]), _number(f["p95"]))
            )  # fmt: skip
        out(table(rows))
    out("")
    rows = [("WORKFLOW", "RUNS", "P50", "P95", "FAILING STEPS (failed/attempts)")]
    for f in flows:
        worst = [s for s in failing if s["workflow_id"] == f["workflow_id"]]
        shown = ", ".join(f"{s['step_id']} {s['failures']}/{s['attempts']}" for s in worst)
        rows.append(
            (f["workflow_id"], str(f["runs"]), _ms(f["p50_ms"]), _ms(f["p95_ms"]), shown or "-")
        )
    out(table(rows))
    return EXIT_OK


async def _run_events(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    from reflection import query, stats

    return (await query(settings, *stats.run_traces(run_id))).records()


async def cmd_runs_show(settings: Settings, args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from infra import NotFoundError, ServiceError
    from orchestrator import table
    from reflux.cli.output import database
    from reflux.cli.remote import remote
    from registry import get_run

    record: Any = None
    if (api := remote(settings)) is not None:
        async with api:
            events = await api.call("GET", f"/runs/{args.run_id}/traces")
            found = await api.call("GET", f"/runs/{args.run_id}")
        record = SimpleNamespace(
            **{k: v for k, v in found.items() if k not in ("steps", "outputs")}
        )
        record.id = found["run_id"]
    else:
        events = await _run_events(settings, args.run_id)
        try:
            async with database(settings) as pool:
                record = await get_run(pool, args.run_id)
        except (NotFoundError, ServiceError) as exc:
            err(f"note: {exc}")
    if args.json:
        out_json({"run": record.__dict__ if record else None, "events": events})
        return EXIT_OK
    if record is not None:
        version = f"@{record.workflow_version}" if record.workflow_version else " (from a file)"
        out(f"run {record.id}: {record.workflow_id}{version}, {record.status}")
    if not events:
        out("no trace events for this run (yet: the sink inserts in batches)")
        return EXIT_OK
    begin = min(datetime.fromisoformat(e["start"]) for e in events)
    rows = [("AT", "STEP", "ATTEMPT", "STATUS", "TOOK", "NODE", "TOKENS", "METRICS", "ERROR")]
    for e in events:
        at = (datetime.fromisoformat(e["start"]) - begin).total_seconds() * 1000
        step = e["step_id"] + (f"[{e['item']}]" if e["item"] >= 0 else "")
        status = e["status"] + (" (cache)" if e["cache_hit"] else "")
        error = f"{e['error_class']}: {e['error']}" if e["error_class"] else ""
        tokens = e.get("cost_tokens")
        figures = _figures(e.get("metrics"))
        rows.append(
            (
                f"+{_ms(at)}",
                step,
                str(e["attempt"]),
                status,
                _ms(e["latency_ms"]),
                f"{e['node']}@{e['node_version']}",
                "-" if tokens is None else str(tokens),
                figures if len(figures) <= 60 else figures[:59] + "…",
                error[:80],
            )
        )
    out(table(rows))
    labels = next((e.get("labels") for e in events if e.get("labels")), None)
    if labels:
        out("labels: " + " ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return EXIT_OK


async def cmd_traces(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        async with api:
            out_json(await api.call("GET", f"/runs/{args.run_id}/traces"))
        return EXIT_OK
    out_json(await _run_events(settings, args.run_id))
    return EXIT_OK


async def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from orchestrator import table
    from reflection import query

    parameters = {}
    for pair in args.param:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            err(f"--param {pair!r}: expected NAME=VALUE")
            return EXIT_INVALID
        parameters[name] = value
    result = await query(settings, args.query, parameters)
    if args.json:
        out_json(result.records())
        return EXIT_OK
    if not result.columns:
        out("(no rows)")
        return EXIT_OK

    def cell(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    out(table([result.columns, *([cell(v) for v in row] for row in result.rows)]))
    return EXIT_OK


async def cmd_cache_clear(settings: Settings, args: argparse.Namespace) -> int:
    from reflection import StepCache
    from registry import object_store

    async with nats_connection(settings) as nc:
        cache = await StepCache.open(nc, object_store(settings), settings.inline_limit)
        removed = await cache.clear(args.node)
    which = f"of {args.node} " if args.node else ""
    out(f"removed {removed} cached result{'s' if removed != 1 else ''} {which}".rstrip())
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    stats = sub.add_parser("stats", help="per node version and per workflow, from the traces")
    stats.add_argument("--node", help="only this node, e.g. http.request")
    stats.add_argument("--workflow", help="only this workflow id")
    stats.add_argument("--since", default="1h", help="how far back, e.g. 15m, 24h (default 1h)")
    stats.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only runs with this label (repeatable: all must match), e.g. experiment=try1",
    )
    stats.add_argument(
        "--include-shadow",
        action="store_true",
        help="count shadow runs (labelled shadow=true) too; left out by default",
    )
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=cmd_stats)

    runs = sub.add_parser("runs", help="runs and their traces").add_subparsers(
        dest="runs_command", required=True, metavar="ACTION"
    )
    show = runs.add_parser("show", help="a run's step timeline: attempts, durations, errors")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_runs_show)

    traces = sub.add_parser("traces", help="a run's trace events as JSON")
    traces.add_argument("run_id")
    traces.add_argument("--json", action="store_true", help="the default (and only) format")
    traces.set_defaults(func=cmd_traces)

    sql = sub.add_parser(
        "sql",
        help="a read-only SQL query on the traces (table `traces`; FINAL is applied)",
        description="Run one SELECT, WITH, SHOW or DESCRIBE on the trace warehouse, through "
        "the trace sink (embedded engine) or on REFLUX_CLICKHOUSE_URL. {name:Type} "
        "placeholders take --param name=value.",
    )
    sql.add_argument("query", help='e.g. "SELECT node, count() FROM traces GROUP BY node"')
    sql.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    sql.add_argument("--json", action="store_true", help="rows as a JSON list of objects")
    sql.set_defaults(func=cmd_sql)

    cache = sub.add_parser("cache", help="the step result cache").add_subparsers(
        dest="cache_command", required=True, metavar="ACTION"
    )
    clear = cache.add_parser("clear", help="forget cached step results (all, or one node's)")
    clear.add_argument("--node", help="only this node's results, e.g. http.request")
    clear.set_defaults(func=cmd_cache_clear)

    reflection = sub.add_parser("reflection", help="the reflection services").add_subparsers(
        dest="reflection_command", required=True, metavar="ACTION"
    )
    reflection.add_parser(
        "sink", help="consume trace events into ClickHouse in the foreground (SIGTERM drains)"
    ).set_defaults(func=cmd_sink)
