"""An embedded stack of its own for a benchmark: Temporal, NATS, PostgreSQL, the worker, the
trace sink, the API and the built-in node services, under a temporary home on free loopback
ports, so it never touches (or is slowed by) a `reflux up` stack on the same machine. And a
second Temporal dev server as it comes, for baselines on stock Temporal."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from temporalio.client import Client

from infra import Settings, Stack, TemporalService, free_port, free_ports, spawn, stop, wait_ready


@dataclass(frozen=True)
class BenchStack:
    home: Path
    settings: Settings

    @cached_property
    def _pids(self) -> dict[str, int]:
        state = json.loads((self.home / "stack.json").read_text())
        return {p["name"]: int(p["pid"]) for p in state["processes"]}

    def pid(self, name: str) -> int:
        """The PID of one of the stack's processes ("worker", "nodes-core" …)."""
        return self._pids[name]

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time one of the stack's processes has used so far."""
        fields = Path(f"/proc/{self.pid(name)}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def embedded_stack(
    echo: Callable[[str], None], keep: bool = False
) -> AsyncIterator[BenchStack]:
    """Start the stack, yield it, stop it (and remove its home unless `keep`)."""
    from orchestrator import background_processes

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
    except BaseException:
        keep = True
        echo(f"the stack's logs are kept under {home / 'logs'}")
        raise
    finally:
        await stack.down(echo)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def stock_temporal(stack: BenchStack) -> AsyncIterator[Client]:
    """A Temporal dev server started as `reflux up` starts it, less our low-latency setting
    (`infra.services.LOW_LATENCY`): what plain Temporal gives out of the box. Yields a
    client to it (default data converter: the baselines pass plain ints)."""
    home = stack.home / "stock-temporal"
    settings = stack.settings.model_copy(
        update={"temporal": stack.settings.temporal.model_copy(update={"port": free_port()})}
    )
    service = TemporalService(settings, home)
    service.low_latency = ()
    service.prepare()
    spec = dataclasses.replace(service.process_spec(), name="stock-temporal")
    record = spawn(spec, log_path=home / "temporal.log", run_dir=home)
    try:
        await wait_ready(spec, record, deadline=time.monotonic() + 60)
        yield await Client.connect(service.default_address, namespace=settings.temporal.namespace)
    finally:
        await stop(record)
