"""`reflux sandbox run FILE`: run a Python or shell file in the sandbox, as code nodes do."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra import Settings, SpecError
from reflux.cli.output import EXIT_FAILED, EXIT_OK, err, out, out_json
from sandbox import CodeRunRequest


def _inputs(text: str | None) -> object:
    if text is None:
        return None
    source = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise SpecError([f"--input:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None


def _request(args: argparse.Namespace) -> CodeRunRequest:
    import pydantic

    path = Path(args.file)
    try:
        code = sys.stdin.read() if args.file == "-" else path.read_text()
    except OSError as exc:
        raise SpecError([f"{args.file}: cannot read: {exc.strerror}"]) from None
    limits = {"timeout": args.timeout, "memory_mb": args.memory_mb, "network": args.network}
    if args.cpu is not None:
        limits["cpu"] = args.cpu
    try:
        return CodeRunRequest.model_validate(
            {
                "lang": "shell" if args.shell or path.suffix == ".sh" else "python",
                "code": code,
                "entry": args.entry,
                "inputs": _inputs(args.input),
                "limits": limits,
            }
        )
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "limits")
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError([f"--{where.replace('_', '-')}: {message}"]) from None


async def cmd_sandbox_run(settings: Settings, args: argparse.Namespace) -> int:
    from sandbox import open_backend

    request = _request(args)
    backend = open_backend(settings.sandbox)
    result = await backend.run(request)
    if args.json:
        out_json(result.model_dump(mode="json"))
        return EXIT_OK if result.status == "ok" else EXIT_FAILED
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.output is not None and request.lang == "python":
        out(json.dumps(result.output, indent=2))
    m = result.metrics
    figures = f"{m.duration_ms:.0f} ms, exit {m.exit_code}"
    if m.peak_mem_mb is not None:
        figures += f", peak {m.peak_mem_mb:.0f} MB"
    if result.status == "ok":
        err(f"sandbox ({backend.name}): ok ({figures})")
        return EXIT_OK
    err(f"sandbox ({backend.name}): {result.status}: {result.error} ({figures})")
    return EXIT_FAILED


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sandbox = sub.add_parser("sandbox", help="run untrusted code in the sandbox").add_subparsers(
        dest="sandbox_command", required=True, metavar="ACTION"
    )
    run = sandbox.add_parser(
        "run",
        help="run a Python file's run(inputs), or a shell script, in the sandbox",
        description="Run FILE in the sandbox the code.* nodes use (backend, allow-list: "
        "REFLUX_SANDBOX_*). Python: the file's `run(inputs)` is called and its return value "
        "printed as JSON (without `run`, the file is the program). Shell (.sh or --shell): "
        "the inputs are in $REFLUX_INPUTS_FILE. The code's own stdout and stderr pass "
        "through; a status line goes to stderr. Exit 0 when the code succeeded, 1 when it "
        "failed, timed out or was killed.",
    )
    run.add_argument("file", help="a .py or .sh file, or - for standard input")
    run.add_argument("--input", help="inputs as JSON, or @file.json")
    run.add_argument("--shell", action="store_true", help="FILE is a shell script")
    run.add_argument("--entry", default="run", help="the Python function to call (default run)")
    run.add_argument("--timeout", default="10s", help="wall clock, e.g. 5s (default 10s)")
    run.add_argument("--cpu", help="CPU time, e.g. 2s (default: the timeout)")
    run.add_argument("--memory-mb", type=int, default=256, help="per process (default 256)")
    run.add_argument(
        "--network",
        choices=["off", "limited", "full"],
        default="off",
        help="off (default); limited: HTTP(S) to public addresses through a guarded proxy; "
        "full: the host's network",
    )
    run.add_argument("--json", action="store_true", help="the whole result as JSON")
    run.set_defaults(func=cmd_sandbox_run)
