"""The long-running processes of the single-machine mode, which `reflux up` starts after
the services: a worker, the evolution worker, the trace sink, the API and one process per
built-in node group."""

from __future__ import annotations

import sys

from infra import ProcessSpec, Settings, stack_home

CLI_MODULE = "reflux.cli"
"""The front door's module: every process is a `reflux` subcommand (named, not imported)."""


def background_processes(settings: Settings) -> list[ProcessSpec]:
    from nodes import builtin_catalog

    me = [sys.executable, "-m", CLI_MODULE]
    groups = settings.nodes.filter or list(builtin_catalog().groups)
    commands = {
        "worker": ["worker"],
        "evolution": ["evolution", "worker"],
        "sink": ["reflection", "sink"],
        "api": ["api"],
    }
    commands.update({f"nodes-{g}": ["nodes", "serve", "--groups", g] for g in groups})
    run_dir = stack_home(settings) / "run"
    api = f"http://{settings.api.host}:{settings.api.port}"
    return [
        ProcessSpec(
            name=name,
            argv=[*me, *argv],
            ready_file=run_dir / f"{name}.ready",
            address=api if name == "api" else None,
        )
        for name, argv in commands.items()
    ]
