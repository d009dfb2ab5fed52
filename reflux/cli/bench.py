"""`reflux bench`: the benchmarks (see bench/README.md)."""

from __future__ import annotations

import argparse

from infra import Settings


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench import run_bench

    return await run_bench(args)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from bench import add_arguments

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks on an embedded stack of their own",
        description="Each scenario's figures beside a baseline measured in the same run, on"
        " an embedded stack of the bench's own (free ports, temporary home).",
    )
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)
