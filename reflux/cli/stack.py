"""`reflux up | down | status | worker | db`: the stack and its long-running processes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from infra import Settings
from orchestrator import background_processes
from reflux.cli.output import EXIT_FAILED, EXIT_OK, err, nats_connection, out


def signal_ready() -> None:
    """Called once a foreground service is serving: tells `reflux up` through its ready file."""
    path = os.environ.get("REFLUX_READY_FILE")
    if path:
        Path(path).touch()


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from infra import Stack

    extra = [] if args.services_only else background_processes(settings)
    await Stack(settings).up(out, extra_processes=extra)
    return EXIT_OK


async def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from infra import Stack

    await Stack(settings).down(out)
    return EXIT_OK


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from infra import Stack
    from orchestrator import table

    statuses = await Stack(settings).status()
    if not statuses:
        out("nothing is running (start it with `reflux up`)")
        return EXIT_OK
    rows = [("SERVICE", "KIND", "PID", "ADDRESS", "HEALTH")]
    for s in statuses:
        health = "healthy" if s.healthy else f"DOWN {s.detail}".rstrip()
        rows.append((s.name, s.kind, str(s.pid or "-"), s.address or "-", health))
    out(table(rows))
    await _show_tracing(settings)
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


async def _show_tracing(settings: Settings) -> None:
    """One line on trace publishing across every process that publishes (best effort)."""
    from infra import ServiceError
    from reflection import publisher_stats, sink_backlog

    try:
        async with nats_connection(settings) as nc:
            found = await publisher_stats(nc)
            backlog = await sink_backlog(nc)
    except ServiceError:
        return
    if found:
        total = {k: sum(p[k] for p in found) for k in ("published", "buffered", "dropped")}
        line = (
            f"traces: {total['published']} published, {total['buffered']} buffered, "
            f"{total['dropped']} dropped ({len(found)} publisher{'s' if len(found) > 1 else ''})"
        )
        if total["dropped"]:
            lossy = ", ".join(f"{p['publisher']}: {p['dropped']}" for p in found if p["dropped"])
            line += f"; DROPPED by {lossy} (buffer full while NATS was unreachable)"
        out(line)
    if backlog is not None:
        out(f"trace sink: {backlog} event{'s' if backlog != 1 else ''} not yet in ClickHouse")


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra import addresses
    from orchestrator import run_worker

    where = addresses(settings)
    queue = settings.temporal.task_queue
    err(f"worker: temporal {where.temporal}, nats {where.nats}, queue {queue}")
    await run_worker(settings, signal_ready)
    return EXIT_OK


async def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from infra import connect, database_url, load_migrations, migrate

    conn = await connect(database_url(settings))
    try:
        applied = await migrate(conn, out)
    finally:
        await conn.close()
    if not applied:
        out(f"schema up to date (migration {len(load_migrations()):04d})")
    return EXIT_OK


async def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    from infra import connect, database_url, redact_url, schema_status
    from orchestrator import table

    url = database_url(settings)
    conn = await connect(url)
    try:
        states = await schema_status(conn)
    finally:
        await conn.close()
    out(f"database {redact_url(url)}")
    rows = [("MIGRATION", "APPLIED")]
    for state in states:
        when = f"{state.applied_at:%Y-%m-%d %H:%M:%S}" if state.applied_at else "pending"
        rows.append((state.migration.filename, when))
    out(table(rows))
    return EXIT_OK if all(s.applied_at for s in states) else EXIT_FAILED


def add_parsers(sub: Any) -> None:
    up = sub.add_parser(
        "up", help="start the embedded stack, migrate the database, start a worker and nodes"
    )
    up.add_argument(
        "--services-only", action="store_true", help="start Temporal, NATS and PostgreSQL only"
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `reflux up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show each service with its health").set_defaults(func=cmd_status)
    sub.add_parser("worker", help="run a Temporal worker in the foreground").set_defaults(
        func=cmd_worker
    )
    db = sub.add_parser("db", help="the registry database").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    db.add_parser(
        "migrate", help="apply pending migrations (safe to repeat and to run concurrently)"
    ).set_defaults(func=cmd_db_migrate)
    db.add_parser("status", help="each migration and when it was applied").set_defaults(
        func=cmd_db_status
    )
