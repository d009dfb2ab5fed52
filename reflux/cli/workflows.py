"""`reflux workflows …`: workflow definitions stored as numbered versions, one of them live
(what runs get, whose triggers are in force); candidates wait beside it to be promoted or
rolled out to a share of new runs."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from infra import Settings
from reflux.cli.output import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    argument_text,
    database,
    err,
    out,
    out_json,
)


async def cmd_push(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        async with api:
            return await _push_remote(
                api, args.files, settings.limits.source_max_bytes, args.candidate
            )
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
                pushed = await registry.push(spec.definition(source), candidate=args.candidate)
            except RegistryError as exc:
                out(f"{path}: {exc}")
                code = EXIT_INVALID
                continue
            out(_pushed_line(path, pushed.version.ref, pushed.created, pushed.version.live))
            if pushed.went_live:  # a candidate's triggers wait for its promotion
                for line in await _sync_schedules(settings, spec, before):
                    out(f"  {line}")
    return code


def _pushed_line(path: str, ref: str, created: bool, live: bool) -> str:
    if not created:
        return f"{path}: unchanged ({ref})" + ("" if live else ", a candidate")
    if live:
        return f"{path}: stored as {ref}"
    workflow_id, version = ref.rsplit("@", 1)
    return (
        f"{path}: stored as {ref}, a candidate: not live, its triggers wait"
        f" (`reflux workflows promote {workflow_id} {version}`)"
    )


def oversized(path: str, max_bytes: int) -> str | None:
    """The one line for a workflow file over `max_bytes`, told from its size alone."""
    from orchestrator import source_too_large

    try:
        size = Path(path).stat().st_size
    except OSError:
        return None  # reading it says why, with the usual message
    problem = source_too_large(size, path, max_bytes)
    return str(problem) if problem is not None else None


async def _push_remote(api: Any, files: list[str], max_bytes: int, candidate: bool) -> int:
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
            body = {"source": source, "candidate": candidate}
            pushed = await api.call("POST", "/workflows", json=body)
        except SpecError as exc:
            for problem in exc.problems:
                out(str(problem).replace("<request>", path, 1))
            code = EXIT_INVALID
            continue
        ref = f"{pushed['workflow_id']}@{pushed['version']}"
        out(_pushed_line(path, ref, pushed["created"], not (candidate and pushed["created"])))
    return code


async def _cron_ids_before(registry: Any, workflow_id: str) -> set[str]:
    from infra import NotFoundError
    from orchestrator import cron_ids

    try:
        return cron_ids((await registry.live(workflow_id)).source)
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
    rows = [("WORKFLOW", "LIVE", "LATEST", "NAMESPACE", "UPDATED", "DESCRIPTION")]
    for w in found:
        rows.append(
            (
                w.id,
                str(w.live_version),
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
    from registry import WorkflowRegistry

    if (api := remote(settings)) is not None:
        async with api:
            versions = await api.call("GET", f"/workflows/{args.id}/versions")
    else:
        async with database(settings) as pool:
            registry = WorkflowRegistry(pool, settings.user)
            stored = await registry.versions(args.id)
            rollout = await registry.rollout(args.id)
        versions = [
            {
                **{k: v for k, v in w.__dict__.items() if k != "source"},
                "rollout": rollout.percent if rollout and rollout.version == w.version else None,
            }
            for w in stored
        ]
    if args.json:
        out_json(versions)
        return EXIT_OK
    rows = [("VERSION", "STATE", "ROLLOUT", "CREATED", "BY", "SPEC HASH", "NOTE")]
    for w in versions:
        state = "live" if w["live"] else "candidate" if w["candidate"] else "-"
        rows.append(
            (
                str(w["version"]),
                state,
                f"{w['rollout']}%" if w["rollout"] else "-",
                f"{_time(w['created_at']):%Y-%m-%d %H:%M:%S}",
                w["created_by"],
                w["spec_hash"][:12],
                _cut(w.get("note") or "", 60),
            )
        )
    out(table(rows))
    return EXIT_OK


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _time(value: datetime | str) -> datetime:
    """A time as the registry gives it, or as the API's JSON does."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    """Every change to a workflow's versions: pushes, promotions, rollouts; who and when."""
    from orchestrator import table
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry

    if (api := remote(settings)) is not None:
        async with api:
            entries = await api.call("GET", f"/workflows/{args.id}/history")
    else:
        async with database(settings) as pool:
            found = await WorkflowRegistry(pool, settings.user).events(args.id)
        entries = [
            {"version": e.version, "action": e.action, "detail": e.detail, "actor": e.actor,
             "at": e.at.isoformat()}
            for e in found
        ]  # fmt: skip
    if args.json:
        out_json(entries)
        return EXIT_OK
    rows = [("AT", "VERSION", "ACTION", "BY", "DETAIL")]
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in (e["detail"] or {}).items()) or "-"
        at = f"{_time(e['at']):%Y-%m-%d %H:%M:%S}"
        rows.append((at, str(e["version"]), e["action"], e["actor"], detail))
    out(table(rows))
    return EXIT_OK


async def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    """Make version N live; its cron triggers become the workflow's Schedules."""
    from infra import SpecError
    from reflux.cli.remote import remote

    if args.version < 1:
        err(f"reflux: version must be 1 or more, got {args.version}")
        return EXIT_INVALID
    ref = f"{args.id}@{args.version}"
    lines: list[str] = []
    try:
        if (api := remote(settings)) is not None:
            async with api:
                body = {"version": args.version}
                done = await api.call("POST", f"/workflows/{args.id}/promote", json=body)
            changed, previous, ended = done["changed"], done["previous"], done["rollout_ended"]
        else:
            changed, previous, ended, lines = await _promote_local(settings, args.id, args.version)
    except SpecError as exc:  # the stored version does not validate any more
        err(f"reflux: cannot promote {ref}: it is not valid any more")
        for problem in exc.problems:
            err(f"  {problem}")
        return EXIT_FAILED
    if not changed:
        out(f"{ref}: already live (nothing changed)")
        return EXIT_OK
    was = f" (was @{previous})" if previous is not None else ""
    stopped = f"; its rollout at {ended}% ended" if ended is not None else ""
    out(f"{ref}: live{was}{stopped}")
    for line in lines:
        out(f"  {line}")
    return EXIT_OK


async def _promote_local(
    settings: Settings, workflow_id: str, version: int
) -> tuple[bool, int | None, int | None, list[str]]:
    from infra import SpecError
    from orchestrator import validate_text
    from registry import NodeRegistry, WorkflowRegistry

    async with database(settings) as pool:
        registry = WorkflowRegistry(pool, settings.user)
        stored = await registry.get(workflow_id, version)
        catalog = await NodeRegistry(pool, settings.user).catalog()
        spec, problems = validate_text(
            stored.source, stored.ref, catalog, settings.limits.source_max_bytes
        )
        if spec is None:
            raise SpecError(problems)
        before = await _cron_ids_before(registry, workflow_id)
        promoted = await registry.promote(workflow_id, version)
    lines = await _sync_schedules(settings, spec, before) if promoted.changed else []
    return promoted.changed, promoted.previous, promoted.rollout_ended, lines


async def cmd_rollout(settings: Settings, args: argparse.Namespace) -> int:
    """Send a share of new runs to version N instead of the live one (`--percent 0` ends it)."""
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry

    if args.version < 1:
        err(f"reflux: version must be 1 or more, got {args.version}")
        return EXIT_INVALID
    if not 0 <= args.percent <= 100:
        err(f"reflux: --percent must be between 0 and 100, got {args.percent}")
        return EXIT_INVALID
    ref = f"{args.id}@{args.version}"
    if (api := remote(settings)) is not None:
        async with api:
            body = {"version": args.version, "percent": args.percent}
            done = await api.call("PUT", f"/workflows/{args.id}/rollout", json=body)
        previous = done["previous"]
    else:
        from orchestrator import load_version

        async with database(settings) as pool:
            if args.percent > 0:  # a version that no longer validates would fail its runs
                await load_version(pool, args.id, args.version)
            was = await WorkflowRegistry(pool, settings.user).set_rollout(
                args.id, args.version, args.percent
            )
        previous = {"version": was.version, "percent": was.percent} if was else None
    if args.percent == 0:
        out(f"{ref}: rollout ended; new runs get the live version")
        return EXIT_OK
    replaced = ""
    if previous is not None:
        same = previous["version"] == args.version
        replaced = (
            f" (was {previous['percent']}%)"
            if same
            else f" (replaces the rollout of @{previous['version']} at {previous['percent']}%)"
        )
    out(f"{ref}: takes {args.percent}% of new runs{replaced}")
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


async def cmd_mutate(settings: Settings, args: argparse.Namespace) -> int:
    """Store a version with graph mutations applied as the workflow's next version."""
    from orchestrator import dump_mutations, parse_mutations, parse_pin, parse_set, revise
    from reflux.cli.remote import remote
    from registry import WorkflowRegistry, parse_ref

    workflow_id, base = parse_ref(args.target)
    texts = [argument_text(text, "--mutation") for text in args.mutation or []]
    given = [m for text in texts for m in parse_mutations(text)]
    changes = (
        given + [parse_set(t) for t in args.set or []] + [parse_pin(t) for t in args.pin or []]
    )
    if not changes:
        err("reflux: nothing to change: give --mutation JSON, --set or --pin")
        return EXIT_INVALID
    if (api := remote(settings)) is not None:
        body = {"base": base, "mutations": dump_mutations(changes), "candidate": args.candidate}
        async with api:
            done = await api.call("POST", f"/workflows/{workflow_id}/mutate", json=body)
    else:
        async with database(settings) as pool:
            before = await _cron_ids_before(WorkflowRegistry(pool, settings.user), workflow_id)
            revision = await revise(
                pool, settings.user, workflow_id, base, changes, candidate=args.candidate
            )
        done = {
            "workflow_id": workflow_id, "base": revision.base, "version": revision.version,
            "created": revision.created, "candidate": revision.candidate,
            "live": revision.went_live, "diff": revision.diff,
        }  # fmt: skip
        if revision.went_live:
            done["triggers"] = await _sync_schedules(settings, revision.spec, before)
    if args.json:
        out(json.dumps(done))
        return EXIT_OK
    ref = f"{workflow_id}@{done['version']}"
    if not done["created"]:
        out(f"{ref}: the mutations make what @{done['version']} already holds (no new version)")
    else:
        state = "candidate (not live)" if done["candidate"] else "live"
        out(f"{ref}: stored from @{done['base']}, {state}")
    if done["diff"]:
        out(done["diff"].rstrip("\n"))
    for line in done.get("triggers", []):
        out(f"  {line}")
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
    push.add_argument(
        "--candidate",
        action="store_true",
        help="store without making it live: its triggers wait until `promote`",
    )
    push.set_defaults(func=cmd_push)

    listing = workflows.add_parser("list", help="stored workflows, live and latest versions")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    versions = workflows.add_parser(
        "versions", help="every version of one workflow: live, candidates, rollout"
    )
    versions.add_argument("id")
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(func=cmd_versions)

    promote = workflows.add_parser(
        "promote", help="make a version live (its triggers too); any version, a rollback too"
    )
    promote.add_argument("id")
    promote.add_argument("version", type=int, metavar="N")
    promote.set_defaults(func=cmd_promote)

    rollout = workflows.add_parser(
        "rollout", help="send a share of new runs to a version other than the live one"
    )
    rollout.add_argument("id")
    rollout.add_argument("version", type=int, metavar="N")
    rollout.add_argument(
        "--percent", type=int, required=True, help="0-100 of new runs; 0 ends the rollout"
    )
    rollout.set_defaults(func=cmd_rollout)

    show = workflows.add_parser(
        "show", help="print a stored version's YAML (default: the live version)"
    )
    show.add_argument("ref", metavar="ID[@N]")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    history = workflows.add_parser(
        "history", help="every push, promotion and rollout change of a workflow: who and when"
    )
    history.add_argument("id")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(func=cmd_history)

    mutate = workflows.add_parser(
        "mutate",
        help="store a version with graph mutations applied as the next version (comments kept)",
    )
    mutate.add_argument("target", metavar="ID[@N]", help="the version to change (default: live)")
    mutate.add_argument(
        "--mutation",
        action="append",
        metavar="JSON",
        help='a JSON list of mutations, or @file.json: [{"op": "set_policy", "step": "fetch",'
        ' "retry": {"max_attempts": 5}}] (ops: update_params, set_policy, replace_node,'
        " add_step, remove_step)",
    )
    mutate.add_argument("--set", action="append", metavar="PATH=VALUE", help="as `reflux run`")
    mutate.add_argument(
        "--pin", action="append", metavar="STEP=NODE@VERSION", help="as `reflux run`"
    )
    mutate.add_argument(
        "--candidate", action="store_true", help="store it as a candidate: live stays as it is"
    )
    mutate.add_argument("--json", action="store_true", help="one JSON object, the diff in it")
    mutate.set_defaults(func=cmd_mutate)

    diff = workflows.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("id")
    diff.add_argument("old", type=int, metavar="N")
    diff.add_argument("new", type=int, metavar="M")
    diff.set_defaults(func=cmd_diff)
