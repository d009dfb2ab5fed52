"""An embedded stack of its own for a benchmark: Temporal, NATS, PostgreSQL, the worker, the
trace sink, the API and the built-in node services, under a temporary home on free loopback
ports, so it never touches (or is slowed by) a `reflux up` stack on the same machine. And a
second Temporal dev server as it comes, for baselines on stock Temporal."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from infra.ports import free_port, free_ports
from infra.processes import spawn, stop
from infra.services import TemporalService
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

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time one of the stack's processes has used so far."""
        fields = Path(f"/proc/{self.pid(name)}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    spec = service.process_spec()
    record = spawn(
        dataclasses.replace(spec, name="stock-temporal"),
        log_path=home / "temporal.log",
        run_dir=home,
    )
    address = service.default_address
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await service.probe(address)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the stock Temporal server did not start: {record.log}"
                    ) from None
                await asyncio.sleep(0.1)
        yield await Client.connect(address, namespace=settings.temporal.namespace)
    finally:
        await stop(record)
