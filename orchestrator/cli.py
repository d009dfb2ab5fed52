"""`reflux`: the one command line of the platform.

    reflux up [--services-only]       start the embedded stack (+ worker and node groups)
    reflux down                       stop what `up` started
    reflux status                     each service, its address and health
    reflux worker                     run a Temporal worker in the foreground
    reflux nodes serve [--groups G]   serve node groups in the foreground
    reflux nodes list                 node versions served right now
    reflux validate FILE...           check workflow files
    reflux run FILE [--input JSON]    run a workflow and show its steps

Exit codes: 0 success; 1 a run failed, `validate` found problems, or a service is
unreachable; 2 `run` was given an invalid file or input.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from infra.errors import RefluxError, SpecError
from infra.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def out(message: str) -> None:
    print(message, flush=True)


# --- stack -----------------------------------------------------------------------------


def background_processes(settings: Settings) -> list[Any]:
    """The single-machine mode: a worker and one process per built-in node group."""
    from infra.stack import ProcessSpec, stack_home
    from nodes.builtin import builtin_catalog

    me = [sys.executable, "-m", "orchestrator.cli"]
    groups = settings.nodes.filter or list(builtin_catalog().groups)
    commands = {"worker": ["worker"]}
    commands.update({f"nodes-{g}": ["nodes", "serve", "--groups", g] for g in groups})
    run_dir = stack_home(settings) / "run"
    return [
        ProcessSpec(name=name, argv=[*me, *argv], ready_file=run_dir / f"{name}.ready")
        for name, argv in commands.items()
    ]


def signal_ready() -> None:
    """Called once a foreground service is serving: tells `reflux up` through its ready file."""
    path = os.environ.get("REFLUX_READY_FILE")
    if path:
        Path(path).touch()


async def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import Stack

    extra = [] if args.services_only else background_processes(settings)
    await Stack(settings).up(out, extra_processes=extra)
    return EXIT_OK


async def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import Stack

    await Stack(settings).down(out)
    return EXIT_OK


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import Stack
    from orchestrator.report import table

    statuses = await Stack(settings).status()
    if not statuses:
        out("nothing is running (start it with `reflux up`)")
        return EXIT_OK
    rows = [("SERVICE", "KIND", "PID", "ADDRESS", "HEALTH")]
    for s in statuses:
        health = "healthy" if s.healthy else f"DOWN {s.detail}".rstrip()
        rows.append((s.name, s.kind, str(s.pid or "-"), s.address or "-", health))
    out(table(rows))
    return EXIT_OK if all(s.healthy for s in statuses) else EXIT_FAILED


# --- services in the foreground -----------------------------------------------------------


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import addresses
    from orchestrator.worker import run_worker

    where = addresses(settings)
    queue = settings.temporal.task_queue
    err(f"worker: temporal {where.temporal}, nats {where.nats}, queue {queue}")
    await run_worker(settings, where.temporal, where.nats, signal_ready)
    return EXIT_OK


def load_catalog(spec: str | None) -> Any:
    from nodes.builtin import builtin_catalog

    if not spec:
        return builtin_catalog()
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr or "catalog")
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"reflux: --catalog {spec}: {exc}") from None
    return found() if callable(found) else found


async def cmd_nodes_serve(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import addresses
    from nodes.runtime import NodeService

    groups = args.groups.split(",") if args.groups else settings.nodes.filter
    chosen = load_catalog(args.catalog).select(groups)
    service = NodeService(chosen, settings)
    where = addresses(settings)
    refs = ", ".join(n.ref for n in service.nodes)
    err(f"serving {refs} on {where.nats}")
    await service.serve_forever(where.nats, signal_ready)
    return EXIT_OK


async def served_nodes(settings: Settings) -> list[Any]:
    """Node versions served right now, asked of the services over NATS."""
    import nats

    from infra.errors import ServiceError
    from infra.stack import addresses
    from nodes.discovery import discover

    url = addresses(settings).nats

    async def quiet(_: Exception) -> None:
        return None

    try:
        # nats-py retries a refused server forever even without reconnects: bound it.
        nc = await asyncio.wait_for(
            nats.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=quiet),
            timeout=3,
        )
    except Exception as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else str(exc)
        raise ServiceError(
            f"cannot reach NATS at {url}: {reason} (is `reflux up` running?)"
        ) from None
    try:
        return await discover(nc)
    finally:
        await nc.close()


async def served_versions(settings: Settings) -> dict[str, list[str]]:
    from nodes.discovery import versions_by_name

    return versions_by_name(await served_nodes(settings))


async def cmd_nodes_list(settings: Settings, args: argparse.Namespace) -> int:
    served = await served_nodes(settings)
    if args.json:
        out(json.dumps([n.__dict__ for n in served], default=str))
        return EXIT_OK
    if not served:
        out("no node services are running (start them with `reflux up` or `reflux nodes serve`)")
    for node in served:
        out(
            f"{node.name}@{node.version}  group={node.group}  replicas={len(node.instances)}  "
            f"{node.manifest.get('description', '')}"
        )
    return EXIT_OK


# --- workflows -----------------------------------------------------------------------------


async def known_versions(settings: Settings) -> dict[str, list[str]]:
    """Served versions; with no NATS reachable, what the built-in catalog would serve."""
    from infra.errors import ServiceError
    from nodes.builtin import builtin_catalog

    try:
        return await served_versions(settings)
    except ServiceError as exc:
        err(f"note: {exc}; checking nodes against the built-in catalog")
        catalog: dict[str, list[str]] = {}
        for node in builtin_catalog().nodes():
            catalog.setdefault(node.name, []).append(node.version)
        return catalog


async def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator.validate import validate_file

    available = await known_versions(settings)
    code = EXIT_OK
    for path in args.files:
        _, problems = validate_file(Path(path), available)
        if problems:
            code = EXIT_FAILED
            for problem in problems:
                out(str(problem))
        else:
            out(f"{path}: ok")
    return code


def parse_inputs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise SpecError(
            [f"--input:{exc.lineno}:{exc.colno}: <input>: invalid JSON: {exc.msg}"]
        ) from None
    if not isinstance(value, dict):
        raise SpecError(["--input:1:1: <input>: must be a JSON object like '{\"x\": 5}'"])
    return value


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import addresses
    from orchestrator.plan import RunInfo, RunRequest, build_plan
    from orchestrator.report import progress_line, run_json, run_table
    from orchestrator.runs import connect_temporal, new_run_id, start_run, wait_run
    from orchestrator.validate import validate_file

    inputs = parse_inputs(args.input)
    available = await served_versions(settings)
    spec, problems = validate_file(Path(args.file), available)
    if problems or spec is None:
        raise SpecError(problems)
    request = RunRequest(
        run=RunInfo(id=new_run_id(spec.id), workflow=spec.id),
        plan=build_plan(spec, available),
        inputs=spec.bind_inputs(inputs),
    )
    client = await connect_temporal(addresses(settings).temporal, settings.temporal.namespace)
    handle = await start_run(client, request, settings.temporal.task_queue)
    if args.no_wait:
        out(json.dumps({"run_id": handle.id, "status": "running"}) if args.json else handle.id)
        return EXIT_OK
    show = None
    if not args.json:
        err(f"run {handle.id} started")
        last = [""]

        def show(steps: dict[str, Any]) -> None:
            line = progress_line(steps)
            if line != last[0]:
                last[0] = line
                if sys.stderr.isatty():
                    sys.stderr.write("\r\033[K" + line)
                    sys.stderr.flush()
                else:
                    err(line)

    result = await wait_run(handle, show)
    if show is not None and sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    out(run_json(result) if args.json else run_table(result))
    return EXIT_OK if result.status == "completed" else EXIT_FAILED


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reflux", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser(
        "up", help="start the embedded stack, a worker and the built-in node groups"
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

    nodes = sub.add_parser("nodes", help="node services").add_subparsers(
        dest="nodes_command", required=True, metavar="ACTION"
    )
    serve = nodes.add_parser("serve", help="serve node groups in the foreground (SIGTERM drains)")
    serve.add_argument("--groups", help="comma-separated groups, e.g. http,core (default: all)")
    serve.add_argument("--catalog", help="MODULE[:ATTR] holding a NodeCatalog (default: built-in)")
    serve.set_defaults(func=cmd_nodes_serve)
    listing = nodes.add_parser("list", help="node versions served right now")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_nodes_list)

    validate = sub.add_parser("validate", help="check workflow files; one line per problem")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="run a workflow file and wait for it")
    run.add_argument("file", metavar="FILE")
    run.add_argument("--input", help="inputs as a JSON object, or @file.json")
    run.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    run.add_argument("--no-wait", action="store_true", help="print the run id and return")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's message names the variable
        err(f"reflux: bad settings: {exc}")
        return EXIT_INVALID
    try:
        code = asyncio.run(args.func(settings, args))
    except SpecError as exc:
        for problem in exc.problems:
            err(str(problem))
        code = EXIT_INVALID
    except RefluxError as exc:
        err(f"reflux: {exc}")
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    return code


def run() -> None:
    """Console entry point. Temporal's Rust threads can crash interpreter teardown
    (temporalio/sdk-python#300), so once all output is flushed the process exits at once."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
