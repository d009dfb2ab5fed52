"""`reflux cache …`: the step result cache (and, as they land, the trace commands)."""

from __future__ import annotations

import argparse
from typing import Any

from infra.settings import Settings
from orchestrator.cli.output import EXIT_OK, nats_connection, out


async def cmd_cache_clear(settings: Settings, args: argparse.Namespace) -> int:
    from reflection.cache import StepCache
    from registry.objects import object_store

    async with nats_connection(settings) as nc:
        cache = await StepCache.open(nc, object_store(settings), settings.inline_limit)
        removed = await cache.clear(args.node)
    which = f"of {args.node} " if args.node else ""
    out(f"removed {removed} cached result{'s' if removed != 1 else ''} {which}".rstrip())
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    cache = sub.add_parser("cache", help="the step result cache").add_subparsers(
        dest="cache_command", required=True, metavar="ACTION"
    )
    clear = cache.add_parser("clear", help="forget cached step results (all, or one node's)")
    clear.add_argument("--node", help="only this node's results, e.g. http.request")
    clear.set_defaults(func=cmd_cache_clear)
