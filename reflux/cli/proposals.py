"""`reflux critic run`, `reflux proposals …` and `reflux evolution worker`: the review loop.

The Critic files proposals from the traces (a person may write one too); each is validated
against a fresh baseline (shadow or canary), judged, then accepted or rejected by a person,
applied, and watched. With `REFLUX_API_URL` set every command goes through the API (and its
roles); else it works on the local stack as its operator (an admin)."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
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

JUDGED = ("validated", "failed_validation", "inconclusive")
WAIT = 3600.0
"""How long `validate --wait` waits for the judgement."""
ACCEPT_WAIT = 60.0
"""How long `accept` waits to see the change applied."""


async def cmd_critic_run(settings: Settings, args: argparse.Namespace) -> int:
    from infra import parse_duration
    from reflux.cli.remote import remote

    try:
        since = timedelta(seconds=parse_duration(args.since)) if args.since else None
    except ValueError as exc:
        err(f"reflux: --since: {exc}")
        return EXIT_INVALID
    if (api := remote(settings)) is not None:
        body = {"workflow": args.workflow, "since": args.since}
        async with api:
            answer = await api.call("POST", "/critic/run", json=body)
        proposals, errors = answer["proposals"], answer.get("errors", [])
    else:
        from evolution import run_critic
        from orchestrator import connect_temporal

        client = await connect_temporal(settings)
        async with database(settings) as pool:
            found, errors = await run_critic(
                client, pool, settings, actor=settings.user, workflow_id=args.workflow,
                since=since,
            )  # fmt: skip
        proposals = [p.contract() for p in found]
    for error in errors:
        err(f"critic: {error}")
    if args.json:
        out_json({"proposals": proposals, "errors": errors})
        return EXIT_OK
    from evolution import proposals_table

    out(proposals_table(proposals) if proposals else "the Critic found nothing to propose")
    return EXIT_OK


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from evolution import ProposalStore, proposals_table
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        params = {k: v for k, v in (("workflow", args.workflow), ("status", args.status)) if v}
        async with api:
            found = await api.call("GET", "/proposals", params=params)
    else:
        async with database(settings) as pool:
            listed = await ProposalStore(pool).list(workflow_id=args.workflow, status=args.status)
        found = [p.contract() for p in listed]
    if args.json:
        out_json(found)
    else:
        out(proposals_table(found))
    return EXIT_OK


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    from evolution import proposal_report

    shown = await _get(settings, args.id)
    if args.json:
        out_json(shown)
    else:
        out(proposal_report(shown))
    return EXIT_OK


async def cmd_create(settings: Settings, args: argparse.Namespace) -> int:
    from evolution import proposal_report
    from reflux.cli.remote import remote

    try:
        mutation = json.loads(argument_text(args.mutation, "--mutation"))
    except json.JSONDecodeError as exc:
        err(f"reflux: --mutation is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        return EXIT_INVALID
    body = {"workflow_id": args.workflow, "title": args.title, "mutation": mutation,
            "diagnosis": args.diagnosis or "", "kind": args.kind}  # fmt: skip
    if (api := remote(settings)) is not None:
        async with api:
            made = await api.call("POST", "/proposals", json=body)
    else:
        from evolution import create
        from orchestrator import connect_temporal

        client = await connect_temporal(settings)
        async with database(settings) as pool:
            proposal = await create(
                client, pool, settings, actor=settings.user, workflow_id=args.workflow,
                title=args.title, mutation=mutation, kind=args.kind,
                diagnosis=args.diagnosis or "", nodes_allowed=True,  # the stack's operator
            )  # fmt: skip
        made = proposal.contract()
    if args.json:
        out_json(made)
    else:
        out(proposal_report(made))
    return EXIT_OK


async def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from evolution import proposal_report

    request = {"action": "validate", "mode": args.mode, "runs": args.runs}
    before = (await _get(settings, args.id)).get("validation") or {}
    await _ask(settings, args.id, request)
    if not args.wait:
        out(f"{args.id}: validation asked ({args.mode or 'mode chosen from the effects'});"
            f" follow it with `reflux proposals show {args.id}` (or --wait)")  # fmt: skip
        return EXIT_OK
    shown = await _wait(
        settings, args.id, JUDGED, WAIT, progress=not args.json,
        fresh=lambda p: (p.get("validation") or {}).get("key") != before.get("key"),
    )  # fmt: skip
    if args.json:
        out_json(shown)
    else:
        out(proposal_report(shown))
    if shown["status"] not in JUDGED:
        err(f"reflux: {args.id} is still {shown['status']} after {WAIT:g}s")
        return EXIT_FAILED
    return EXIT_OK if shown["status"] == "validated" else EXIT_FAILED


async def cmd_accept(settings: Settings, args: argparse.Namespace) -> int:
    request = {"action": "accept", "note": args.note or "", "force": args.force}
    await _ask(settings, args.id, request)
    shown = await _wait(settings, args.id, ("applied", "rejected", "reverted"), ACCEPT_WAIT)
    if args.json:
        out_json(shown)
        return EXIT_OK if shown["status"] == "applied" else EXIT_FAILED
    applied = shown.get("applied") or {}
    if shown["status"] == "applied" and applied.get("workflow_version"):
        ref = f"{shown['workflow_id']}@{applied['workflow_version']}"
        out(f"{args.id}: applied: {ref} is live (was @{applied.get('previous_version')});"
            f" see `reflux workflows diff {shown['workflow_id']} {applied.get('previous_version')}"
            f" {applied['workflow_version']}`; the next runs are watched")  # fmt: skip
        return EXIT_OK
    if shown["status"] == "applied":
        out(f"{args.id}: applied: {applied.get('node')}")
        return EXIT_OK
    last = (shown.get("history") or [{}])[-1]
    if shown["status"] == "rejected":
        err(f"reflux: {args.id} was not applied: {last.get('note', '')}")
        return EXIT_FAILED
    err(f"reflux: {args.id} is still {shown['status']} after {ACCEPT_WAIT:g}s: is the evolution"
        " worker running? (`reflux status`)")  # fmt: skip
    return EXIT_FAILED


async def cmd_reject(settings: Settings, args: argparse.Namespace) -> int:
    await _ask(settings, args.id, {"action": "reject", "note": args.note})
    shown = await _wait(settings, args.id, ("rejected",), ACCEPT_WAIT)
    if shown["status"] != "rejected":
        err(f"reflux: {args.id} is still {shown['status']}: is the evolution worker running?")
        return EXIT_FAILED
    out(f"{args.id}: rejected")
    return EXIT_OK


async def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from evolution import run_evolution_worker
    from infra import addresses
    from reflux.cli.stack import signal_ready

    where = addresses(settings)
    err(f"evolution worker: temporal {where.temporal}, queue {settings.evolution.task_queue}")
    await run_evolution_worker(settings, signal_ready)
    return EXIT_OK


async def _get(settings: Settings, proposal_id: str) -> dict[str, Any]:
    from evolution import ProposalStore
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        async with api:
            return await api.call("GET", f"/proposals/{proposal_id}")  # type: ignore[no-any-return]
    async with database(settings) as pool:
        return (await ProposalStore(pool).get(proposal_id)).contract()


async def _ask(settings: Settings, proposal_id: str, request: dict[str, Any]) -> None:
    from reflux.cli.remote import remote

    action = request.pop("action")
    if (api := remote(settings)) is not None:
        async with api:
            await api.call("POST", f"/proposals/{proposal_id}/{action}", json=request)
        return
    from evolution import Request, ask
    from orchestrator import connect_temporal

    client = await connect_temporal(settings)
    wanted = Request(action=action, actor=settings.user, role="admin", **request)
    async with database(settings) as pool:
        await ask(client, pool, settings, proposal_id, wanted)


async def _wait(
    settings: Settings, proposal_id: str, done: tuple[str, ...], timeout: float,
    progress: bool = False, fresh: Any = lambda _: True,
) -> dict[str, Any]:  # fmt: skip
    """The proposal once its status is in `done` and `fresh(proposal)` holds (a new
    validation, not the one judged before), polling (the API, or the database)."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    seen = None
    while True:
        shown = await _get(settings, proposal_id)
        validation = shown.get("validation") or {}
        mark = (shown["status"], json.dumps(validation.get("samples")))
        if progress and mark != seen and shown["status"] == "validating":
            got = validation.get("samples") or {}
            err(
                f"  validating ({validation.get('mode')}): {got.get('baseline', 0)} baseline,"
                f" {got.get('candidate', 0)} candidate of {validation.get('target')}"
            )
        seen = mark
        if (shown["status"] in done and fresh(shown)) or time.monotonic() >= deadline:
            return shown
        await asyncio.sleep(1.0)


def add_parsers(sub: Any) -> None:
    critic = sub.add_parser("critic", help="the Critic: proposals from the traces").add_subparsers(
        dest="critic_command", required=True, metavar="ACTION"
    )
    scan = critic.add_parser(
        "run", help="scan recent traces now and file proposals (also every REFLUX_CRITIC_EVERY)"
    )
    scan.add_argument("--workflow", metavar="ID", help="only this workflow")
    scan.add_argument(
        "--since",
        metavar="DURATION",
        help="how far back (default: 1h), in whole minutes: from the one the window starts in",
    )
    scan.add_argument("--json", action="store_true", help='{"proposals": [...], "errors": []}')
    scan.set_defaults(func=cmd_critic_run)

    proposals = sub.add_parser(
        "proposals", help="review suggested changes: validate, accept, reject"
    ).add_subparsers(dest="proposals_command", required=True, metavar="ACTION")
    listing = proposals.add_parser("list", help="proposals, newest first")
    listing.add_argument("--workflow", metavar="ID")
    listing.add_argument("--status", metavar="S", help="open, validating, validated, …")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = proposals.add_parser("show", help="one proposal: evidence, validation, history")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="the contract JSON")
    show.set_defaults(func=cmd_show)

    create = proposals.add_parser("create", help="propose a change yourself")
    create.add_argument("--workflow", required=True, metavar="ID")
    create.add_argument("--title", required=True)
    create.add_argument(
        "--mutation", required=True, metavar="JSON",
        help='mutations as `reflux workflows mutate` takes them (or @file.json), or node'
        ' operations: {"op": "rollout", "node": N, "version": V, "percent": P}, "deprecate"',
    )  # fmt: skip
    create.add_argument("--diagnosis", help="why, in a few sentences")
    create.add_argument("--kind", help="retry, timeout, params, cache, … (default: inferred)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_create)

    validate = proposals.add_parser(
        "validate", help="try it against a fresh baseline: shadow replays, or a canary"
    )
    validate.add_argument("id")
    validate.add_argument("--mode", choices=("shadow", "canary"), help="default: by effects")
    validate.add_argument("--runs", type=int, metavar="N", help="runs per arm (default 40)")
    validate.add_argument("--wait", action="store_true", help="wait for the judgement")
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(func=cmd_validate)

    accept = proposals.add_parser("accept", help="apply a validated proposal")
    accept.add_argument("id")
    accept.add_argument("--note", help="why (required with --force)")
    accept.add_argument(
        "--force", action="store_true", help="admins: accept what did not pass validation"
    )
    accept.add_argument("--json", action="store_true")
    accept.set_defaults(func=cmd_accept)

    reject = proposals.add_parser("reject", help="turn a proposal down, saying why")
    reject.add_argument("id")
    reject.add_argument("--note", required=True)
    reject.set_defaults(func=cmd_reject)

    evolution = sub.add_parser("evolution", help="the evolution layer's processes")
    evolution_sub = evolution.add_subparsers(
        dest="evolution_command", required=True, metavar="ACTION"
    )
    evolution_sub.add_parser(
        "worker", help="run the evolution worker (proposals' lifecycles, the Critic's scans)"
    ).set_defaults(func=cmd_worker)
