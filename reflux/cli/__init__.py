"""`reflux`: the one command line of the platform.

    reflux up [--services-only]          start the embedded stack (+ worker and node groups)
    reflux down                          stop what `up` started
    reflux status                        each service, its address and health
    reflux worker                        run a Temporal worker in the foreground
    reflux db migrate | status           apply / list the database migrations

    reflux nodes serve [--groups G]      serve node groups in the foreground
    reflux nodes list                    every node version, its status and who serves it
    reflux nodes show NAME               versions, manifest, services, history
    reflux nodes search TEXT             find nodes by name, description or tag
    reflux nodes promote NAME VERSION --to staging|production [--force]
    reflux nodes deprecate NAME VERSION
    reflux nodes rollout NAME VERSION --percent N

    reflux workflows push FILE...        store a new version when the content changed
    reflux workflows list | versions ID | show ID[@N] | diff ID N M

    reflux validate FILE...              check workflow files
    reflux run FILE|ID[@N] [--input J]   run a workflow and show its steps
    reflux stats [--node N] [--workflow W] [--since 1h]   figures from the traces
    reflux runs show RUN_ID              a run's step timeline
    reflux traces RUN_ID                 a run's trace events as JSON
    reflux cache clear [--node NAME]     forget cached step results
    reflux reflection sink               consume traces into ClickHouse (foreground)
    reflux sandbox run FILE [--input J]  run a .py's run(inputs) or a .sh in the sandbox

    reflux critic run [--workflow ID] [--since 1h]        file proposals from the traces
    reflux proposals list | show ID | create --workflow ID --title T --mutation JSON
    reflux proposals validate ID [--mode shadow|canary] [--runs N] [--wait]
    reflux proposals accept ID [--note T] [--force] | reject ID --note T
    reflux evolution worker              run the evolution worker in the foreground

    reflux api [--host H --port P]       serve the HTTP API in the foreground (docs at /docs)
    reflux tokens create --role R [--namespace NS] [--name N] | list | revoke ID
    reflux secrets set NAME [--namespace NS] [--webhook]   the value from stdin
    reflux secrets list [--namespace NS] | delete NAME [--namespace NS] [--webhook]

Exit codes: 0 success; 1 a run failed, `validate` found problems, the registry refused a
change, or a service is unreachable; 2 invalid input (a workflow file, --input, arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from infra import InputShapeError, RefluxError, Settings, SpecError
from reflux.cli import (
    api,
    bench,
    nodes,
    proposals,
    reflection,
    runs,
    sandbox,
    secrets,
    stack,
    workflows,
)
from reflux.cli.output import EXIT_FAILED, EXIT_INVALID, err


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reflux",
        description=__doc__.split("\n\n")[0],
        epilog="Every command takes --help.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        stack,
        nodes,
        workflows,
        runs,
        reflection,
        proposals,
        sandbox,
        api,
        secrets,
        bench,
    ):
        module.add_parsers(sub)
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
        code: int = asyncio.run(args.func(settings, args))
    except SpecError as exc:
        for problem in exc.problems:
            err(str(problem))
        code = EXIT_INVALID
    except InputShapeError as exc:
        err(f"reflux: {exc}")
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
