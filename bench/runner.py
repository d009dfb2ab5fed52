"""`reflux bench [SCENARIO…] [--json FILE] [--quick]` (or `python -m bench`): start an
embedded stack of its own, run the scenarios against it, each beside its baseline measured in
the same run, and print one table (and write it as JSON). A scenario whose module says
`STACK = False` needs no stack; when every chosen one says so, none is started."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: `reflux` builds this parser on every command
    from collections.abc import Callable

    import asyncpg
    from temporalio.client import Client

    from bench.figures import Figure
    from bench.stack import BenchStack
    from orchestrator import RunResult, Spec

SCENARIOS = {
    "floor": "a bare NATS request to a node service vs a raw NATS round trip",
    "chain": "40 light steps in sequence vs the same chain of plain Temporal activities",
    "fanout": "for_each over 100 items, concurrency 20, vs plain Temporal activities",
    "start": "submit -> first step running, vs a plain Temporal start -> first workflow task",
    "concurrent": "200 concurrent runs of 5 steps: throughput and memory",
    "cache": "a step cache hit vs a plain NATS request",
    "ingest": "trace events published -> queryable in ClickHouse, vs raw JetStream publishing",
    "sandbox": "a trivial sandboxed Python run vs starting a plain interpreter",
    "shards": "for_each over 100,000 items in child workflows vs 1,000 in one workflow",
    "judge": "the evolution judge on simulated A/A and A/B validations vs a naive mean rule",
    "critic": "a Critic scan over 1,000,000 trace events vs a plain GROUP BY over the same rows",
}
"""Name -> what it measures, in the order they run; each is `bench.scenarios.<name>.run`."""


@dataclass
class BenchOptions:
    """What every scenario gets, a scenario with `STACK = False` nothing more: how long to
    run, and a way to say what it is doing."""

    quick: bool

    def say(self, line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)


@dataclass
class Bench(BenchOptions):
    """What a scenario on the stack gets: the stack, clients to it, and how long to run."""

    stack: BenchStack
    client: Client
    pool: asyncpg.Pool
    resources: AsyncExitStack = field(default_factory=AsyncExitStack)
    _stock: Client | None = None

    async def stock(self) -> Client:
        """A client to a stock Temporal dev server (started on first use, stopped at the end
        of the bench): for baselines on Temporal as it comes."""
        from bench.stack import stock_temporal

        if self._stock is None:
            self.say("starting a stock Temporal dev server for the baseline …")
            self._stock = await self.resources.enter_async_context(stock_temporal(self.stack))
        return self._stock

    async def run(self, spec: Spec, inputs: dict[str, Any] | None = None) -> RunResult:
        """One run as `reflux run` makes it: catalog snapshot, pins, ledger, start, wait."""
        handle = await self.submit(spec, inputs)
        return await self.wait(handle)

    async def submit(self, spec: Spec, inputs: dict[str, Any] | None = None) -> Any:
        from orchestrator import submit
        from registry import NodeRegistry

        settings = self.stack.settings
        catalog = await NodeRegistry(self.pool, settings.user).catalog()
        return await submit(self.client, self.pool, settings, spec, catalog, inputs or {})

    async def wait(self, handle: Any) -> RunResult:
        from orchestrator import wait_run

        result = await wait_run(handle)
        if result.status != "completed":
            raise RuntimeError(f"bench run {result.run_id} {result.status}: {result.error}")
        return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    listing = "; ".join(f"{name}: {title}" for name, title in SCENARIOS.items())
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"what to run (default: all). {listing}"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small counts, figures not meaningful"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the stack's home (logs) after the run"
    )


async def run_bench(args: argparse.Namespace) -> int:
    from bench.figures import table

    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        print(
            f"reflux bench: unknown scenario {', '.join(unknown)} (one of {', '.join(SCENARIOS)})",
            file=sys.stderr,
        )
        return 2
    chosen = args.scenarios or list(SCENARIOS)
    figures: list[Figure] = []
    failed: list[str] = []
    began = time.monotonic()

    def echo(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    modules = {name: importlib.import_module(f"bench.scenarios.{name}") for name in chosen}
    async with AsyncExitStack() as resources:
        options: BenchOptions = BenchOptions(args.quick)
        if any(getattr(module, "STACK", True) for module in modules.values()):
            options = await _on_stack(resources, echo, args)
        for name, scenario in modules.items():
            echo(f"{name}: {SCENARIOS[name]}")
            started = time.monotonic()
            try:
                figures += await scenario.run(options)
            except Exception as exc:  # the other scenarios' figures still count
                failed.append(name)
                echo(f"  {name} FAILED: {type(exc).__name__}: {exc}")
                continue
            echo(f"  done in {time.monotonic() - started:.1f}s")
    print(table(figures))
    if failed:
        print(f"failed: {', '.join(failed)} (see above)")
    if args.quick:
        print("(--quick: small counts; these figures only show the bench works)")
    report = {
        "taken": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "quick": args.quick,
        "seconds": round(time.monotonic() - began, 1),
        "figures": [f.as_dict() for f in figures],
        "failed": failed,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        echo(f"figures written to {args.json}")
    if failed:
        return 1
    return 0 if args.quick or all(f.met is not False for f in figures) else 1


async def _on_stack(
    resources: AsyncExitStack, echo: Callable[[str], None], args: argparse.Namespace
) -> Bench:
    """Start the embedded stack and clients to it, closed with `resources`."""
    from bench.stack import embedded_stack
    from infra import create_pool, database_url
    from orchestrator import connect_temporal

    stack = await resources.enter_async_context(embedded_stack(echo, keep=args.keep))
    client = await connect_temporal(stack.settings)
    pool = await create_pool(database_url(stack.settings), min_size=1, max_size=8)
    resources.push_async_callback(pool.close)
    bench = Bench(quick=args.quick, stack=stack, client=client, pool=pool)
    resources.push_async_callback(bench.resources.aclose)
    return bench


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }
