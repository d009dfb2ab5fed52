"""`reflux api` (the HTTP API in the foreground) and `reflux tokens …` (its tokens)."""

from __future__ import annotations

import argparse
from typing import Any

from infra import Settings
from reflux.cli.output import EXIT_INVALID, EXIT_OK, database, err, out, out_json
from reflux.cli.stack import signal_ready


async def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.api import serve

    if args.host:
        settings.api.host = args.host
    if args.port:
        settings.api.port = args.port
    err(f"api: http://{settings.api.host}:{settings.api.port} (docs at /docs)")
    await serve(settings, signal_ready)
    return EXIT_OK


async def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    from infra import RegistryError
    from registry import TokenStore, check_namespace

    if args.namespace is not None:  # "" is no namespace's name, not "every namespace"
        try:
            check_namespace(args.namespace)
        except RegistryError as exc:
            err(f"reflux: --namespace: {exc}")
            return EXIT_INVALID
    async with database(settings) as pool:
        token, text = await TokenStore(pool, settings.user).create(
            args.role, args.namespace, args.name
        )
    scope = "every namespace" if token.namespace is None else f"namespace {token.namespace}"
    err(f"token {token.id}: role {token.role}, {scope}. It is shown this once; keep it.")
    out(text)
    return EXIT_OK


async def cmd_tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from registry import TokenStore

    async with database(settings) as pool:
        tokens = await TokenStore(pool, settings.user).list()
    if args.json:
        out_json([{**vars(t)} for t in tokens])
        return EXIT_OK
    rows = [("ID", "NAME", "ROLE", "NAMESPACE", "CREATED", "LAST USED", "REVOKED")]
    for t in tokens:
        when = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else "-"  # noqa: E731
        scope = "*" if t.namespace is None else t.namespace or "''"  # '': made by an old version
        rows.append((t.id, t.name or "-", t.role, scope, when(t.created_at),
                     when(t.last_used_at), when(t.revoked_at)))  # fmt: skip
    out(table(rows))
    return EXIT_OK


async def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from registry import TokenStore

    async with database(settings) as pool:
        token = await TokenStore(pool, settings.user).revoke(args.id)
    out(f"token {token.id} revoked")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    api = sub.add_parser("api", help="serve the HTTP API in the foreground (docs at /docs)")
    api.add_argument("--host", help="default REFLUX_API_HOST or 127.0.0.1")
    api.add_argument("--port", type=int, help="default REFLUX_API_PORT or 8080")
    api.set_defaults(func=cmd_api)

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens_command", required=True, metavar="ACTION"
    )
    create = tokens.add_parser("create", help="make a token; prints it once")
    create.add_argument("--role", required=True, choices=["viewer", "author", "reviewer", "admin"])
    create.add_argument(
        "--namespace", help="the one namespace it sees, a namespace's name (default: all)"
    )
    create.add_argument("--name", default="", help="who or what it is for")
    create.set_defaults(func=cmd_tokens_create)
    listing = tokens.add_parser("list", help="every token (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_tokens_list)
    revoke = tokens.add_parser("revoke", help="stop a token from working")
    revoke.add_argument("id", help="the token's id (rfx_<id>_…)")
    revoke.set_defaults(func=cmd_tokens_revoke)
