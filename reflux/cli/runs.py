"""`reflux validate` and `reflux run`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra import LimitsSettings, Settings, SpecError
from reflux.cli.output import EXIT_FAILED, EXIT_INVALID, EXIT_OK, database, err, out
from registry import Catalog


def builtin_versions() -> Catalog:
    """What the built-in node library serves, all as production: for checks with no registry."""
    from nodes import builtin_catalog

    return Catalog.from_manifests(node.manifest() for node in builtin_catalog().nodes())


async def registry_catalog(settings: Settings) -> Catalog:
    from registry import NodeRegistry

    async with database(settings) as pool:
        return await NodeRegistry(pool, settings.user).catalog()


async def cmd_validate(settings: Settings, args: argparse.Namespace) -> int:
    from infra import ServiceError
    from orchestrator import validate_file

    try:
        catalog = await registry_catalog(settings)
    except ServiceError as exc:
        err(f"note: {exc}; checking nodes against the built-in library")
        catalog = builtin_versions()
    from reflux.cli.workflows import oversized

    code = EXIT_OK
    for path in args.files:
        if (too_large := oversized(path, settings.limits.source_max_bytes)) is not None:
            out(too_large)
            code = EXIT_INVALID
            continue
        _, problems = validate_file(Path(path), catalog)
        if problems:
            code = max(code, EXIT_FAILED)
            for problem in problems:
                out(str(problem))
        else:
            out(f"{path}: ok")
    return code


def parse_inputs(text: str | None, limits: LimitsSettings | None = None) -> dict[str, Any]:
    """`--input`: a JSON object, or @file.json, within the input limits (else SpecError:
    one line, exit 2)."""
    from infra import InputShapeError, check_text

    if not text:
        return {}
    limits = limits or LimitsSettings()
    try:
        source = Path(text[1:]).read_text() if text.startswith("@") else text
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text: {exc.reason}"
        raise SpecError([f"--input: cannot read {text[1:]}: {why}"]) from None
    try:
        check_text(source, limits.input_max_depth, limits.input_max_bytes, "--input")
    except InputShapeError as exc:
        raise SpecError([str(exc)]) from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise SpecError(
            [f"--input:{exc.lineno}:{exc.colno}: <input>: invalid JSON: {exc.msg}"]
        ) from None
    if not isinstance(value, dict):
        raise SpecError(["--input:1:1: <input>: must be a JSON object like '{\"x\": 5}'"])
    return value


def looks_like_file(target: str) -> bool:
    return Path(target).exists() or target.endswith((".yaml", ".yml")) or "/" in target


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from reflux.cli.remote import remote

    if (api := remote(settings)) is not None:
        async with api:
            return await _run_remote(api, args, parse_inputs(args.input, settings.limits))
    from orchestrator import (
        apply_mutations,
        check_labels,
        connect_temporal,
        launch,
        parse_pairs,
        progress_line,
        run_json,
        run_table,
        submit,
        validate_file,
        wait_run,
    )
    from registry import NodeRegistry, parse_ref

    inputs = parse_inputs(args.input, settings.limits)
    mutations = variant_mutations(args)
    labels = check_labels(parse_pairs(args.label or []), "--label")
    async with database(settings) as pool:
        client = await connect_temporal(settings)
        if looks_like_file(args.target):
            from reflux.cli.workflows import oversized

            if args.shadow_of:
                raise SpecError(["--shadow-of replays through a stored version: push it first"])
            if (too_large := oversized(args.target, settings.limits.source_max_bytes)) is not None:
                raise SpecError([too_large])
            catalog = await NodeRegistry(pool, settings.user).catalog()
            spec, problems = validate_file(Path(args.target), catalog)
            if problems or spec is None:
                raise SpecError(problems)
            if mutations:
                spec = apply_mutations(spec, mutations, catalog, args.target)
            handle = await submit(
                client, pool, settings, spec, catalog, spec.bind_inputs(inputs), labels=labels
            )
        else:
            workflow_id, wanted = parse_ref(args.target)
            launched = await launch(
                client, pool, settings, workflow_id, wanted,
                inputs if args.input is not None or not args.shadow_of else None,
                mutations=mutations, labels=labels, actor=settings.user,
                shadow_of=args.shadow_of,
            )  # fmt: skip
            handle = launched.handle
            if launched.labels and not args.json:
                err("labels " + ", ".join(f"{k}={v}" for k, v in launched.labels.items()))
    if args.no_wait:
        out(json.dumps({"run_id": handle.id, "status": "running"}) if args.json else handle.id)
        return EXIT_OK
    if args.follow:
        await _follow(client, handle.id)
    show = None
    if not args.json and not args.follow:
        err(f"run {handle.id} started")
        last = [""]

        def show(steps: dict[str, Any]) -> None:
            line = progress_line(steps)
            if line != last[0]:
                last[0] = line
                if sys.stderr.isatty():
                    sys.stderr.write("\r\033[K" + line)
                    sys.stderr.flush()
                else:
                    err(line)

    result = await wait_run(handle, show)
    if show is not None and sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    out(run_json(result) if args.json else run_table(result))
    return EXIT_OK if result.status == "completed" else EXIT_FAILED


def variant_mutations(args: argparse.Namespace) -> list[Any]:
    """`--set PATH=VALUE` and `--pin STEP=NODE@VERSION` as graph mutations, in order."""
    from orchestrator import parse_pin, parse_set

    return [parse_set(text) for text in args.set or []] + [
        parse_pin(text) for text in args.pin or []
    ]


async def _follow(client: Any, run_id: str) -> None:
    """One line per event on stderr while the run goes on."""
    from orchestrator import follow

    err(f"run {run_id} started")
    async for event in follow(client, run_id):
        err(event_line(event.as_json()))


def event_line(event: dict[str, Any]) -> str:
    """A run event (`RunEvent.as_json()`, or the data of an SSE event) as one line."""
    import time
    from datetime import datetime

    when = datetime.fromtimestamp(event.get("at") or time.time()).strftime("%H:%M:%S.%f")[:-3]
    what = event.get("step") or event.get("status") or ""
    extra = f" (attempt {event['attempt']})" if event["type"] == "step.retried" else ""
    if event.get("error"):
        extra += f": {event['error'].get('class')}: {event['error'].get('message')}"
    return f"{when:12} {event['type']:15} {what}{extra}".rstrip()


async def _run_remote(api: Any, args: argparse.Namespace, inputs: dict[str, Any]) -> int:
    """`reflux run` through the API: a file is pushed first (a new version only when it
    changed), then its version runs."""
    import asyncio

    from orchestrator import (
        RunResult,
        StepError,
        parse_pairs,
        progress_line,
        run_json,
        run_table,
    )

    target = args.target
    if looks_like_file(target):
        try:
            source = Path(target).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise SpecError([f"{target}: cannot read file: {exc.strerror}"]) from None
        pushed = await api.call("POST", "/workflows", json={"source": source})
        target = f"{pushed['workflow_id']}@{pushed['version']}"
    body: dict[str, Any] = {"workflow": target, "inputs": inputs}
    if mutations := variant_mutations(args):
        body["mutations"] = [m.model_dump(mode="json", exclude_none=True) for m in mutations]
    if args.label:
        body["labels"] = parse_pairs(args.label)
    if args.shadow_of:
        body["shadow_of"] = args.shadow_of
        if args.input is None:
            del body["inputs"]
    run_id = (await api.call("POST", "/runs", json=body))["run_id"]
    if args.no_wait:
        out(json.dumps({"run_id": run_id, "status": "running"}) if args.json else run_id)
        return EXIT_OK
    if args.follow:
        err(f"run {run_id} started")
        async for event in api.events(run_id):
            err(event_line(event))
    elif not args.json:
        err(f"run {run_id} started")
    last = ""
    while True:
        detail = await api.call("GET", f"/runs/{run_id}")
        if detail["status"] != "running":
            break
        line = progress_line(RunResult.model_validate({**detail, "workflow": ""}).steps)
        if not args.json and not args.follow and line != last:
            err(line)
            last = line
        await asyncio.sleep(0.5)
    error = detail.get("error")
    result = RunResult(
        run_id=run_id,
        workflow=detail["workflow_id"],
        status=detail["status"],
        outputs=detail["outputs"],
        steps=detail["steps"],
        error=StepError.model_validate(error) if error else None,
        failed_step=(error or {}).get("step"),
    )
    out(run_json(result) if args.json else run_table(result))
    return EXIT_OK if result.status == "completed" else EXIT_FAILED


def add_parsers(sub: Any) -> None:
    validate = sub.add_parser("validate", help="check workflow files; one line per problem")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="run a workflow file or stored version and wait for it")
    run.add_argument(
        "target", metavar="FILE|ID[@N]", help="a YAML file, or a stored workflow (latest or @N)"
    )
    run.add_argument("--input", help="inputs as a JSON object, or @file.json")
    run.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    run.add_argument("--no-wait", action="store_true", help="print the run id and return")
    run.add_argument(
        "--follow", action="store_true", help="print each step event as it happens (stderr)"
    )
    run.add_argument(
        "--set",
        action="append",
        metavar="PATH=VALUE",
        help="change the version for this run only: STEP.with.KEY, STEP.retry.FIELD,"
        " STEP.timeout or STEP.cache.ttl (VALUE is a YAML scalar); repeatable",
    )
    run.add_argument(
        "--pin",
        action="append",
        metavar="STEP=NODE@VERSION",
        help="run STEP on this exact node version (a draft or staging one too); repeatable",
    )
    run.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="label the run and every trace event of it (filter stats with it); repeatable",
    )
    run.add_argument(
        "--shadow-of",
        metavar="RUN_ID",
        help="replay RUN_ID's inputs through this version without performing a write"
        " (write steps take RUN_ID's output when their params match, else are skipped)",
    )
    run.set_defaults(func=cmd_run)
