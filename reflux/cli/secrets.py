"""`reflux secrets set | list | delete`: the secret store, locally or (with REFLUX_API_URL)
through the API with an admin token. Values are read from stdin, never from arguments
(which `ps` and shell history show), and never printed."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from infra import SecretError, Settings
from reflux.cli.output import EXIT_INVALID, EXIT_OK, database, err, out, out_json
from registry import MIN_VALUE, MIN_VALUE_WHY


def namespace_arg(text: str) -> str:
    """A --namespace value: a namespace's name, never "" (which would read as every one)."""
    from infra import RegistryError
    from registry import check_namespace

    try:
        return check_namespace(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def name_arg(text: str) -> str:
    from registry import check_name

    try:
        return check_name(text)
    except SecretError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def read_value() -> str:
    """The value from stdin: typed without echo on a terminal, else piped (one trailing
    newline dropped, as `echo` and here-strings add it)."""
    if sys.stdin.isatty():
        return getpass.getpass("value: ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


def _kind(args: argparse.Namespace) -> str:
    return "webhook" if args.webhook else "secret"


async def cmd_set(settings: Settings, args: argparse.Namespace) -> int:
    from infra import secrets_key
    from reflux.cli.remote import remote
    from registry import SecretStore, audit

    value = read_value()
    if len(value) < MIN_VALUE:
        err(f"reflux: secret '{args.name}': {len(value)} characters on stdin; {MIN_VALUE_WHY}")
        return EXIT_INVALID
    api = remote(settings)
    if api is not None:
        async with api:
            body = {"value": value, "namespace": args.namespace, "kind": _kind(args)}
            done = await api.call("PUT", f"/secrets/{args.name}", json=body)
        namespace, created = done["namespace"], done["created"]
    else:
        namespace = args.namespace or "default"
        async with database(settings) as pool:
            store = SecretStore(pool, secrets_key(settings, create=True), settings.user)
            created = await store.set(namespace, args.name, value, _kind(args))  # type: ignore[arg-type]
            await _audit(audit, pool, settings, "set_secret", f"{namespace}/{args.name}")
    noun = "webhook key" if args.webhook else "secret"
    out(f"{noun} {args.name} {'set' if created else 'replaced'} in namespace {namespace}")
    return EXIT_OK


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from orchestrator import table
    from reflux.cli.remote import remote
    from registry import SecretStore

    api = remote(settings)
    if api is not None:
        async with api:
            params = {"namespace": args.namespace} if args.namespace else {}
            found: list[dict[str, Any]] = await api.call("GET", "/secrets", params=params)
    else:
        async with database(settings) as pool:
            found = [vars(s) for s in await SecretStore(pool, None).list(args.namespace)]
    if args.json:
        out_json(found)
        return EXIT_OK
    rows = [("NAME", "NAMESPACE", "KIND", "UPDATED", "BY")]
    for s in found:
        updated = str(s["updated_at"])[:16].replace("T", " ")
        rows.append((s["name"], s["namespace"], s["kind"], updated, s["updated_by"]))
    out(table(rows))
    return EXIT_OK


async def cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote
    from registry import SecretStore, audit

    api = remote(settings)
    namespace = args.namespace or "default"
    if api is not None:
        async with api:
            params = {
                "kind": _kind(args),
                **({"namespace": args.namespace} if args.namespace else {}),
            }
            done = await api.call("DELETE", f"/secrets/{args.name}", params=params)
        namespace = done["namespace"]
    else:
        async with database(settings) as pool:
            await SecretStore(pool, None, settings.user).delete(namespace, args.name, _kind(args))  # type: ignore[arg-type]
            await _audit(audit, pool, settings, "delete_secret", f"{namespace}/{args.name}")
    noun = "webhook key" if args.webhook else "secret"
    out(f"{noun} {args.name} deleted from namespace {namespace}")
    return EXIT_OK


async def _audit(audit: Any, pool: Any, settings: Settings, action: str, what: str) -> None:
    await audit.record(
        pool, token_id=None, role="local", namespace=None, method="CLI",
        path=f"reflux secrets {what}", action=action, status=200, detail={"user": settings.user},
    )  # fmt: skip


def add_parsers(sub: Any) -> None:
    secrets = sub.add_parser(
        "secrets", help="secrets by namespace, sealed in the registry (values from stdin)"
    ).add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    put = secrets.add_parser("set", help="store a value read from stdin (prompted on a terminal)")
    put.add_argument("name", type=name_arg, help="A-Z, 0-9 and _: what secret('NAME') reads")
    put.add_argument(
        "--namespace", type=namespace_arg, help="whose runs may read it (default: default)"
    )
    put.add_argument("--webhook", action="store_true", help="a webhook signing key instead")
    put.set_defaults(func=cmd_set)
    listing = secrets.add_parser("list", help="names, kinds and namespaces (never values)")
    listing.add_argument("--namespace", type=namespace_arg, help="only this namespace")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
    delete = secrets.add_parser("delete", help="forget a secret")
    delete.add_argument("name", type=name_arg)
    delete.add_argument("--namespace", type=namespace_arg, help="default: default")
    delete.add_argument("--webhook", action="store_true", help="a webhook signing key")
    delete.set_defaults(func=cmd_delete)
