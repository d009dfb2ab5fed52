"""An embedded stack of its own for a benchmark: Temporal, NATS, PostgreSQL, the worker, the
trace sink, the API and the built-in node services, under a temporary home on free loopback
ports, so it never touches (or is slowed by) a `reflux up` stack on the same machine."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.ports import free_ports
from infra.settings import Settings
from infra.stack import Stack


@dataclass(frozen=True)
class BenchStack:
    home: Path
    settings: Settings

    def pid(self, name: str) -> int:
        """The PID of one of the stack's processes ("worker", "nodes-core" …)."""
        state = json.loads((self.home / "stack.json").read_text())
        return int(next(p["pid"] for p in state["processes"] if p["name"] == name))


@asynccontextmanager
async def embedded_stack(
    echo: Callable[[str], None], keep: bool = False
) -> AsyncIterator[BenchStack]:
    """Start the stack, yield it, stop it (and remove its home unless `keep`)."""
    from orchestrator.cli.stack import background_processes

    home = Path(tempfile.mkdtemp(prefix="reflux-bench-"))
    temporal, nats, monitor, postgres, api = free_ports(5)
    os.environ.update(
        REFLUX_HOME=str(home),
        REFLUX_TEMPORAL_PORT=str(temporal),
        REFLUX_NATS_PORT=str(nats),
        REFLUX_NATS_MONITOR_PORT=str(monitor),
        REFLUX_DATABASE_PORT=str(postgres),
        REFLUX_API_PORT=str(api),
    )
    for external in ("REFLUX_TEMPORAL_ADDRESS", "REFLUX_NATS_URL", "REFLUX_DATABASE_URL"):
        os.environ.pop(external, None)
    settings = Settings()
    stack = Stack(settings)
    echo(f"starting an embedded stack under {home} …")
    try:
        await stack.up(echo, extra_processes=background_processes(settings), timeout=120)
        yield BenchStack(home, settings)
    finally:
        await stack.down(echo)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
