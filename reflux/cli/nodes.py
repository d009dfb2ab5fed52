"""`reflux nodes …`: serve node groups, and the node catalog in the registry."""

from __future__ import annotations

import argparse
import importlib
import json
from types import SimpleNamespace
from typing import Any

from infra import ServiceError, Settings
from reflux.cli.output import EXIT_OK, database, err, nats_connection, out, out_json
from reflux.cli.stack import signal_ready


def load_node_catalog(spec: str | None) -> Any:
    from nodes import builtin_catalog

    if not spec:
        return builtin_catalog()
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr or "catalog")
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"reflux: --catalog {spec}: {exc}") from None
    return found() if callable(found) else found


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from infra import addresses
    from nodes import NodeService

    catalog = load_node_catalog(args.catalog)
    groups = args.groups.split(",") if args.groups else settings.nodes.filter
    service = NodeService(catalog.select(groups), settings, builtin=catalog.builtin)
    where = addresses(settings)
    refs = ", ".join(n.ref for n in service.nodes)
    err(f"serving {refs} on {where.nats}")
    await service.serve_forever(where.nats, signal_ready)
    return EXIT_OK


async def served_nodes(settings: Settings) -> list[Any]:
    """Node versions served right now, asked of the services over NATS."""
    from nodes import discover

    async with nats_connection(settings) as nc:
        return await discover(nc)


async def _served_or_none(settings: Settings) -> dict[tuple[str, str], Any] | None:
    """(name, version) -> ServedNode; None (with a note) when NATS is unreachable."""
    try:
        return {(n.name, n.version): n for n in await served_nodes(settings)}
    except ServiceError as exc:
        err(f"note: {exc}; serving status unknown")
        return None


def _served_text(served: dict[tuple[str, str], Any] | None, name: str, version: str) -> str:
    if served is None:
        return "?"
    node = served.get((name, version))
    return f"{len(node.instances)} ({node.group})" if node else "-"


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from reflux.cli.remote import remote
    from registry import NodeRegistry

    if (api := remote(settings)) is not None:  # who serves what is not told over the API
        async with api:
            listed = await api.call("GET", "/nodes")
        nodes: list[Any] = [
            SimpleNamespace(
                rollout=SimpleNamespace(**n["rollout"]) if n["rollout"] else None,
                versions=[SimpleNamespace(name=n["name"], **v) for v in n["versions"]],
            )
            for n in listed
        ]
        served = None
    else:
        async with database(settings) as pool:
            nodes = await NodeRegistry(pool, settings.user).nodes()
        served = await _served_or_none(settings)
    versions = [
        {
            "name": v.name,
            "version": v.version,
            "status": v.status,
            "rollout": node.rollout.percent
            if node.rollout and node.rollout.version == v.version
            else 0,
            "replicas": len(served[(v.name, v.version)].instances)
            if served and (v.name, v.version) in served
            else 0,
            "description": v.manifest.get("description", ""),
        }
        for node in nodes
        for v in node.versions
    ]
    if args.json:
        out_json(versions)
        return EXIT_OK
    if not versions:
        out("no nodes registered yet (node services register theirs when they start)")
        return EXIT_OK
    rows = [("NODE", "VERSION", "STATUS", "ROLLOUT", "SERVED", "DESCRIPTION")]
    for v in versions:
        rows.append(
            (
                v["name"],
                v["version"],
                v["status"],
                f"{v['rollout']}%" if v["rollout"] else "-",
                _served_text(served, v["name"], v["version"]),
                _first_line(v["description"]),
            )
        )
    out(table(rows))
    return EXIT_OK


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from registry import NodeRegistry

    async with database(settings) as pool:
        node = await NodeRegistry(pool, settings.user).show(args.name)
    served = await _served_or_none(settings)
    if args.json:
        out_json(
            {
                "name": node.name,
                "description": node.description,
                "tags": node.tags,
                "rollout": node.rollout.__dict__ if node.rollout else None,
                "versions": [
                    {**v.__dict__, "served": _served_text(served, v.name, v.version)}
                    for v in node.versions
                ],
                "events": [e.__dict__ for e in node.events],
            }
        )
        return EXIT_OK
    out(f"{node.name}: {_first_line(node.description)}")
    if node.tags:
        out(f"tags: {', '.join(node.tags)}")
    if node.rollout:
        out(f"rollout: {node.rollout.version} takes {node.rollout.percent}% of new runs")
    rows = [("VERSION", "STATUS", "SERVED", "REGISTERED", "BY", "ARTIFACT")]
    for v in node.versions:
        rows.append(
            (
                v.version,
                v.status,
                _served_text(served, v.name, v.version),
                f"{v.created_at:%Y-%m-%d %H:%M}",
                v.created_by,
                v.artifact_uri or "-",
            )
        )
    out("")
    out(table(rows))
    shown = next((v for v in node.versions if v.version == args.version), None)
    if args.version and shown is None:
        err(f"note: {node.name} has no version {args.version}; showing the newest")
    shown = shown or node.versions[-1]
    out("")
    out(f"manifest of {shown.version}:")
    for title in ("params", "output"):
        out(f"  {title}:")
        for line in _schema_lines(shown.manifest.get(title) or {}):
            out(f"    {line}")
    out("")
    out("history:")
    for e in node.events:
        change = f"{e.from_status} -> {e.to_status}" if e.from_status else f"as {e.to_status}"
        if e.action == "rollout":
            change = f"{e.detail.get('percent')}%"
        note = f"  ({e.detail['note']})" if e.detail.get("note") else ""
        out(f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.version:<9} {e.action} {change} by {e.actor}{note}")
    return EXIT_OK


async def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from registry import NodeRegistry

    async with database(settings) as pool:
        hits = await NodeRegistry(pool, settings.user).search(args.text, args.limit)
    if args.json:
        out_json([hit.__dict__ for hit in hits])
        return EXIT_OK
    if not hits:
        out(f"no node matches '{args.text}'")
        return EXIT_OK
    rows = [("NODE", "SCORE", "TAGS", "DESCRIPTION")]
    for hit in hits:
        rows.append(
            (hit.name, f"{hit.score:.2f}", ",".join(hit.tags) or "-", _first_line(hit.description))
        )
    out(table(rows))
    return EXIT_OK


async def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import NodeRegistry

    if (api := remote(settings)) is not None:
        body = {"to": args.to, "force": args.force, "note": args.note}
        async with api:
            path = f"/nodes/{args.name}/versions/{args.version}/promote"
            _say_change(SimpleNamespace(**await api.call("POST", path, json=body)))
        return EXIT_OK
    async with database(settings) as pool:
        change = await NodeRegistry(pool, settings.user).promote(
            args.name, args.version, args.to, force=args.force, note=args.note
        )
    _say_change(change)
    return EXIT_OK


async def cmd_deprecate(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import NodeRegistry

    if (api := remote(settings)) is not None:
        async with api:
            path = f"/nodes/{args.name}/versions/{args.version}/deprecate"
            _say_change(SimpleNamespace(**await api.call("POST", path, json={"note": args.note})))
        return EXIT_OK
    async with database(settings) as pool:
        change = await NodeRegistry(pool, settings.user).deprecate(
            args.name, args.version, note=args.note
        )
    _say_change(change)
    return EXIT_OK


def _say_change(change: Any) -> None:
    ref = f"{change.name}@{change.version}"
    if change.changed:
        out(f"{ref}: {change.before} -> {change.after}")
    else:
        out(f"{ref}: already {change.after} (nothing changed)")


async def cmd_rollout(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import NodeRegistry

    previous = None
    if (api := remote(settings)) is not None:
        async with api:
            path = f"/nodes/{args.name}/versions/{args.version}/rollout"
            await api.call("PUT", path, json={"percent": args.percent})
    else:
        async with database(settings) as pool:
            previous = await NodeRegistry(pool, settings.user).rollout(
                args.name, args.version, args.percent
            )
    ref = f"{args.name}@{args.version}"
    was = f" (was {previous.version} at {previous.percent}%)" if previous else ""
    if args.percent == 0:
        out(f"{ref}: rollout stopped; runs get the newest production version again{was}")
    else:
        out(f"{ref}: takes {args.percent}% of new runs whose node spec it matches{was}")
    return EXIT_OK


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0][:80]


def _schema_lines(schema: dict[str, Any]) -> list[str]:
    """One line per property of a JSON schema: name, type, required/default, description."""
    required = set(schema.get("required", []))
    lines = []
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") or " | ".join(
            str(alt.get("type", alt.get("$ref", "?")).split("/")[-1])
            for alt in prop.get("anyOf", [])
        )
        if name in required:
            extra = "required"
        elif "default" in prop:
            extra = f"default {json.dumps(prop['default'])}"
        else:
            extra = "optional"
        description = f"  {_first_line(prop['description'])}" if prop.get("description") else ""
        lines.append(f"{name}: {kind or 'any'} ({extra}){description}")
    return lines or ["(none)"]


def add_parsers(sub: Any) -> None:
    nodes = sub.add_parser("nodes", help="node services and the node catalog").add_subparsers(
        dest="nodes_command", required=True, metavar="ACTION"
    )
    serve = nodes.add_parser(
        "serve", help="serve node groups in the foreground (registers them; SIGTERM drains)"
    )
    serve.add_argument("--groups", help="comma-separated groups, e.g. http,core (default: all)")
    serve.add_argument("--catalog", help="MODULE[:ATTR] holding a NodeCatalog (default: built-in)")
    serve.set_defaults(func=cmd_serve)

    listing = nodes.add_parser("list", help="every registered version, its status, who serves it")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = nodes.add_parser("show", help="a node's versions, manifest, services and history")
    show.add_argument("name")
    show.add_argument("--version", help="whose manifest to show (default: the newest)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    search = nodes.add_parser("search", help="find nodes by name, description or tag")
    search.add_argument("text")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    promote = nodes.add_parser("promote", help="move a version up: draft -> staging -> production")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--to", required=True, choices=["staging", "production"])
    promote.add_argument(
        "--force", action="store_true", help="bring a deprecated version back to production"
    )
    promote.add_argument("--note", default="", help="why, recorded in the history")
    promote.set_defaults(func=cmd_promote)

    deprecate = nodes.add_parser(
        "deprecate", help="retire a version: new runs refuse it and name the replacement"
    )
    deprecate.add_argument("name")
    deprecate.add_argument("version")
    deprecate.add_argument("--note", default="", help="why, recorded in the history")
    deprecate.set_defaults(func=cmd_deprecate)

    rollout = nodes.add_parser(
        "rollout", help="send a share of new runs to a staging or production version"
    )
    rollout.add_argument("name")
    rollout.add_argument("version")
    rollout.add_argument("--percent", type=int, required=True, help="0-100; 0 stops the rollout")
    rollout.set_defaults(func=cmd_rollout)
