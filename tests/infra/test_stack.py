"""The embedded stack with the real binaries: Temporal dev server, nats-server, Postgres.

Each stack gets its own tmp home and its own free ports, so the tests run in parallel.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.errors import ServiceError
from infra.ports import free_ports
from infra.processes import ProcessSpec
from infra.settings import DatabaseSettings, NatsSettings, Settings, TemporalSettings
from infra.stack import Addresses, ServiceStatus, Stack, addresses
from tests.helpers.waiting import eventually_async

pytestmark = pytest.mark.timeout(120)

SERVICES = ["temporal", "nats", "postgres"]


def make_settings(home: Path, **external: str) -> Settings:
    temporal_port, nats_port, monitor_port, db_port = free_ports(4)
    return Settings(
        home=home,
        temporal=TemporalSettings(port=temporal_port, address=external.get("temporal")),
        nats=NatsSettings(port=nats_port, monitor_port=monitor_port, url=external.get("nats")),
        database=DatabaseSettings(port=db_port, url=external.get("database")),
    )


def by_name(statuses: list[ServiceStatus]) -> dict[str, ServiceStatus]:
    return {s.name: s for s in statuses}


def gone(pid: int) -> bool:
    """No such process, or only a zombie left of it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


async def wait_gone(pid: int, timeout: float = 10.0) -> None:
    await eventually_async(lambda: gone(pid), timeout=timeout, what=f"pid {pid} to end")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, list[str]]]:
    """One stack with all three services embedded, shared by the non-destructive tests."""
    stack = Stack(make_settings(tmp_path_factory.mktemp("stack")))
    lines: list[str] = []
    try:
        asyncio.run(stack.up(lines.append))
        yield stack, lines
    finally:
        asyncio.run(stack.down())


async def test_up_starts_every_service_healthy(running: tuple[Stack, list[str]]) -> None:
    stack, lines = running
    s = stack.settings
    expected = Addresses(
        temporal=f"127.0.0.1:{s.temporal.port}",
        nats=f"nats://127.0.0.1:{s.nats.port}",
        database=f"postgresql://reflux@127.0.0.1:{s.database.port}/reflux",
    )
    assert addresses(s) == expected
    for name, address in zip(
        SERVICES, (expected.temporal, expected.nats, expected.database), strict=True
    ):
        assert any(line.startswith(f"{name}: started at {address}") for line in lines), lines
    assert "postgres: applied migration 0001_registry.sql" in lines

    statuses = by_name(await stack.status())
    assert list(statuses)[:3] == SERVICES
    for name in SERVICES:
        status = statuses[name]
        assert (status.kind, status.healthy) == ("embedded", True), status
        assert status.pid is not None and not gone(status.pid)

    state = json.loads((stack.home / "stack.json").read_text())
    assert state["version"] == 1 and state["home"] == str(stack.home)
    record = {r["name"]: r for r in state["processes"]}["postgres"]
    assert record["pid"] == statuses["postgres"].pid
    assert record["address"] == expected.database
    assert record["stop_signal"] == "SIGINT"
    assert Path(record["log"]) == stack.home / "logs" / "postgres.log"
    assert (stack.home / "run" / "postgres.pid").read_text().strip() == str(record["pid"])


async def test_embedded_services_are_usable(running: tuple[Stack, list[str]]) -> None:
    import asyncpg
    import nats

    found = addresses(running[0].settings)
    conn = await asyncpg.connect(found.database)
    try:
        extensions = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
        assert {"vector", "pg_trgm"} <= extensions
        assert await conn.fetchval("SELECT '[1,2]'::vector <-> '[1,3]'::vector") == 1.0
    finally:
        await conn.close()

    client = await nats.connect(found.nats)
    try:
        info = await client.jetstream().account_info()
        assert info.limits is not None
        assert client.max_payload >= 8 * 1024 * 1024
    finally:
        await client.close()


async def test_second_up_is_a_noop(running: tuple[Stack, list[str]]) -> None:
    stack, _ = running
    before = {s.name: s.pid for s in await stack.status()}
    lines: list[str] = []
    await stack.up(lines.append)
    schema = [line for line in lines if "schema up to date" in line]
    assert len(schema) == 1, lines
    lines.remove(schema[0])
    assert sorted(line.split(":")[0] for line in lines) == sorted(SERVICES)
    assert all("already running" in line for line in lines), lines
    assert {s.name: s.pid for s in await stack.status()} == before


async def test_external_services_are_used_not_started(
    running: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    found = addresses(running[0].settings)
    settings = make_settings(
        tmp_path / "home", temporal=found.temporal, nats=found.nats, database=found.database
    )
    stack = Stack(settings)
    lines: list[str] = []
    assert await stack.up(lines.append) == found
    external = [line for line in lines if ": external at " in line]
    assert len(external) == 3 and "postgres: schema up to date" in lines[-1], lines
    assert not stack.state_path.exists()  # nothing started, nothing recorded
    for status in await stack.status():
        assert (status.kind, status.healthy, status.pid) == ("external", True, None), status
    assert addresses(settings) == found

    await stack.down(lines.append)
    assert "nothing to stop" in lines[-1]
    assert all(s.healthy for s in await running[0].status())


async def test_external_service_down_is_reported(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    stack = Stack(make_settings(tmp_path, nats=f"nats://127.0.0.1:{port}"))
    status = by_name(await stack.status())["nats"]
    assert (status.kind, status.healthy, status.pid) == ("external", False, None)
    assert status.detail


async def test_extra_processes_start_wait_and_fail_clearly(
    running: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    found = addresses(running[0].settings)
    stack = Stack(
        make_settings(
            tmp_path / "home", temporal=found.temporal, nats=found.nats, database=found.database
        )
    )
    ready = tmp_path / "worker.ready"
    script = (
        "import os, pathlib, time; time.sleep(0.2); "
        "pathlib.Path(os.environ['REFLUX_READY_FILE']).write_text(os.environ['REFLUX_HOME']); "
        "time.sleep(600)"
    )
    worker = ProcessSpec("worker", [sys.executable, "-c", script], ready_file=ready)
    lines: list[str] = []
    try:
        await stack.up(lines.append, [worker])
        assert ready.read_text() == str(stack.home)
        assert any(line.startswith("worker: started (pid") for line in lines), lines
        status = by_name(await stack.status())["worker"]
        assert status.healthy and status.pid is not None

        lines.clear()
        await stack.up(lines.append, [worker])
        assert lines[-1] == f"worker: already running (pid {status.pid})"

        crash = "import sys; print('boom: bad config'); sys.exit(3)"
        crasher = ProcessSpec("crasher", [sys.executable, "-c", crash])
        with pytest.raises(ServiceError) as caught:
            await stack.up(lines.append, [worker, crasher])
        message = str(caught.value)
        assert message.startswith("crasher exited with code 3 during start-up"), message
        assert "boom: bad config" in message
        assert "crasher" not in by_name(await stack.status())

        lines.clear()
        await stack.down(lines.append)
        assert lines == [f"worker: stopped (pid {status.pid})"]
        await wait_gone(status.pid)
    finally:
        await stack.down()


async def test_port_in_use_names_the_service(
    running: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    found = addresses(running[0].settings)
    settings = make_settings(tmp_path, temporal=found.temporal, database=found.database)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.nats.port))
        squatter.listen()
        with pytest.raises(ServiceError, match=rf"^nats .*port {settings.nats.port}.* in use"):
            await Stack(settings).up()
    assert not Stack(settings).state_path.exists()


async def test_lifecycle_stale_pid_restart_and_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    first, second = Stack(settings), Stack(settings)
    lines: list[str] = []
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # Two `up` at once: the lock serialises them, the second finds all running.
        await asyncio.gather(first.up(lines.append), second.up(lines.append))
        assert sum("started at" in line for line in lines) == 3, lines
        assert sum("already running" in line for line in lines) == 3, lines
        pids = {s.name: s.pid for s in await first.status()}

        os.kill(pids["nats"], signal.SIGKILL)
        await wait_gone(pids["nats"])
        status = by_name(await first.status())["nats"]
        assert (status.healthy, status.pid) == (False, None)
        assert "not running" in status.detail

        # A reused PID: the record names a live PID, but the process we started under that
        # PID began a second earlier (start time in clock ticks, 100 per second).
        stat = Path(f"/proc/{bystander.pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19]) - 100
        state = json.loads(first.state_path.read_text())
        fake = dict(
            state["processes"][0], name="impostor", kind="process", pid=bystander.pid,
            start_ticks=ticks,
        )  # fmt: skip
        state["processes"].append(fake)
        first.state_path.write_text(json.dumps(state))

        lines.clear()
        await first.up(lines.append)
        assert any(line.startswith("nats: recorded pid") and "stale" in line for line in lines)
        after = {s.name: s.pid for s in await first.status() if s.name in SERVICES}
        assert after["temporal"] == pids["temporal"] and after["postgres"] == pids["postgres"]
        assert after["nats"] not in (None, pids["nats"])
        assert all(s.healthy for s in await first.status() if s.name in SERVICES)

        lines.clear()
        await first.down(lines.append)
        assert "impostor: was not running" in lines[0]
        assert bystander.poll() is None  # never signalled
        for pid in after.values():
            assert pid is not None
            await wait_gone(pid, timeout=1)
        for status in await first.status():
            assert (status.healthy, status.pid, status.detail) == (False, None, "not running")
        assert not first.state_path.exists()
        assert not list((first.home / "run").iterdir())
    finally:
        bystander.kill()
        bystander.wait()
        await first.down()


async def test_postgres_restarts_after_sigkill_with_its_lock_pid_reused(
    running: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    found = addresses(running[0].settings)
    stack = Stack(make_settings(tmp_path / "home", temporal=found.temporal, nats=found.nats))
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        await stack.up()
        old = by_name(await stack.status())["postgres"].pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await wait_gone(old)
        # After a crash the PID in postmaster.pid may belong to another program by now.
        lock = stack.home / "postgres" / "data" / "postmaster.pid"
        rest = lock.read_text().split("\n", 1)[1]
        lock.write_text(f"{bystander.pid}\n{rest}")

        lines: list[str] = []
        await stack.up(lines.append)
        assert any("stale" in line for line in lines), lines
        status = by_name(await stack.status())["postgres"]
        assert status.healthy and status.pid not in (None, old), status
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        await stack.down()
