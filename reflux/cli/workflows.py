"""`reflux workflows …`: workflow definitions stored as numbered versions."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from infra import Settings
from reflux.cli.output import EXIT_INVALID, EXIT_OK, database, out, out_json


async def cmd_push(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        async with api:
            return await _push_remote(api, args.files, settings.limits.source_max_bytes)
    from infra import RegistryError
    from orchestrator import validate_file
    from registry import NodeRegistry, WorkflowRegistry

    code = EXIT_OK
    limit = settings.limits.source_max_bytes
    async with database(settings) as pool:
        catalog = await NodeRegistry(pool, settings.user).catalog()
        registry = WorkflowRegistry(pool, settings.user)
        for path in args.files:
            if (too_large := oversized(path, limit)) is not None:
                out(too_large)
                code = EXIT_INVALID
                continue
            spec, problems = validate_file(Path(path), catalog)
            if spec is None:
                for problem in problems:
                    out(str(problem))
                code = EXIT_INVALID
                continue
            before = await _cron_ids_before(registry, spec.id)
            source = Path(path).read_text(encoding="utf-8-sig")
            try:
                pushed = await registry.push(spec.definition(source))
            except RegistryError as exc:
                out(f"{path}: {exc}")
                code = EXIT_INVALID
                continue
            ref = pushed.version.ref
            out(f"{path}: stored as {ref}" if pushed.created else f"{path}: unchanged ({ref})")
            if pushed.created:
                for line in await _sync_schedules(settings, spec, before):
                    out(f"  {line}")
    return code


def oversized(path: str, max_bytes: int) -> str | None:
    """The one line for a workflow file over `max_bytes`, told from its size alone."""
    from orchestrator import source_too_large

    try:
        size = Path(path).stat().st_size
    except OSError:
        return None  # reading it says why, with the usual message
    problem = source_too_large(size, path, max_bytes)
    return str(problem) if problem is not None else None


async def _push_remote(api: Any, files: list[str], max_bytes: int) -> int:
    from infra import SpecError

    code = EXIT_OK
    for path in files:
        if (too_large := oversized(path, max_bytes)) is not None:
            out(too_large)
            code = EXIT_INVALID
            continue
        try:
            source = Path(path).read_text(encoding="utf-8-sig")
        except OSError as exc:
            out(f"{path}: cannot read file: {exc.strerror}")
            code = EXIT_INVALID
            continue
        try:
            pushed = await api.call("POST", "/workflows", json={"source": source})
        except SpecError as exc:
            for problem in exc.problems:
                out(str(problem).replace("<request>", path, 1))
            code = EXIT_INVALID
            continue
        ref = f"{pushed['workflow_id']}@{pushed['version']}"
        out(f"{path}: stored as {ref}" if pushed["created"] else f"{path}: unchanged ({ref})")
    return code


async def _cron_ids_before(registry: Any, workflow_id: str) -> set[str]:
    from infra import NotFoundError
    from orchestrator import cron_ids

    try:
        return cron_ids((await registry.get(workflow_id)).source)
    except NotFoundError:
        return set()


async def _sync_schedules(settings: Settings, spec: Any, before: set[str]) -> list[str]:
    """Cron triggers -> Temporal Schedules, and event listeners told to reload; a Temporal
    or NATS out of reach is said, not fatal (the next push brings them in step)."""
    from infra import ServiceError
    from orchestrator import announce_change, connect_temporal, sync_schedules
    from reflux.cli.output import nats_connection

    try:
        client = await connect_temporal(settings)
        changes = await sync_schedules(client, spec, settings.temporal.task_queue, before)
        async with nats_connection(settings) as nc:
            await announce_change(nc)
    except ServiceError as exc:
        return [f"triggers not updated: {exc}"]
    return changes


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from reflux.cli.remote import remote
    from registry import Workflow, WorkflowRegistry

    if (api := remote(settings)) is not None:
        async with api:
            listed = await api.call("GET", "/workflows")
        found = [
            Workflow(**{**w, "updated_at": datetime.fromisoformat(w["updated_at"])}) for w in listed
        ]
    else:
        async with database(settings) as pool:
            found = await WorkflowRegistry(pool, settings.user).workflows()
    if args.json:
        out_json([w.__dict__ for w in found])
        return EXIT_OK
    if not found:
        out("no workflows stored yet (store one with `reflux workflows push FILE`)")
        return EXIT_OK
    rows = [("WORKFLOW", "LATEST", "NAMESPACE", "UPDATED", "DESCRIPTION")]
    for w in found:
        rows.append(
            (
                w.id,
                str(w.latest_version),
                w.namespace,
                f"{w.updated_at:%Y-%m-%d %H:%M}",
                w.description.strip().split("\n", 1)[0][:60],
            )
        )
    out(table(rows))
    return EXIT_OK


async def cmd_versions(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry, WorkflowVersion

    if (api := remote(settings)) is not None:
        async with api:
            listed = await api.call("GET", f"/workflows/{args.id}/versions")
        versions = [
            WorkflowVersion(
                **{**v, "source": "", "created_at": datetime.fromisoformat(v["created_at"])}
            )  # noqa: E501
            for v in listed
        ]
    else:
        async with database(settings) as pool:
            versions = await WorkflowRegistry(pool, settings.user).versions(args.id)
    if args.json:
        out_json([{k: v for k, v in w.__dict__.items() if k != "source"} for w in versions])
        return EXIT_OK
    rows = [("VERSION", "CREATED", "BY", "SPEC HASH")]
    for w in versions:
        rows.append(
            (str(w.version), f"{w.created_at:%Y-%m-%d %H:%M:%S}", w.created_by, w.spec_hash[:12])
        )
    out(table(rows))
    return EXIT_OK


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry, parse_ref

    workflow_id, version = parse_ref(args.ref)
    if (api := remote(settings)) is not None:
        async with api:
            params = {"version": version} if version else {}
            shown = await api.call("GET", f"/workflows/{workflow_id}", params=params)
    else:
        async with database(settings) as pool:
            shown = (await WorkflowRegistry(pool, settings.user).get(workflow_id, version)).__dict__
    if args.json:
        out_json(shown)
    else:
        out(shown["source"].rstrip("\n"))
    return EXIT_OK


async def cmd_diff(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry

    if (api := remote(settings)) is not None:
        async with api:
            params = {"old": args.old, "new": args.new}
            diff = (await api.call("GET", f"/workflows/{args.id}/diff", params=params))["diff"]
    else:
        async with database(settings) as pool:
            diff = await WorkflowRegistry(pool, settings.user).diff(args.id, args.old, args.new)
    out(diff.rstrip("\n") if diff else f"{args.id}@{args.old} and @{args.new} are the same text")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    workflows = sub.add_parser("workflows", help="stored workflow versions").add_subparsers(
        dest="workflows_command", required=True, metavar="ACTION"
    )
    push = workflows.add_parser(
        "push", help="validate and store files; a new version only when the content changed"
    )
    push.add_argument("files", nargs="+", metavar="FILE")
    push.set_defaults(func=cmd_push)

    listing = workflows.add_parser("list", help="stored workflows and their latest versions")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    versions = workflows.add_parser("versions", help="every version of one workflow")
    versions.add_argument("id")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(func=cmd_versions)

    show = workflows.add_parser("show", help="print a stored version's YAML (default: latest)")
    show.add_argument("ref", metavar="ID[@N]")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    diff = workflows.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("id")
    diff.add_argument("old", type=int, metavar="N")
    diff.add_argument("new", type=int, metavar="M")
    diff.set_defaults(func=cmd_diff)
