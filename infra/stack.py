"""The embedded local stack: `up`, `down` and `status` over the state file HOME/stack.json.

`up` starts whatever is neither external nor already running (the three services in
parallel, then the caller's extra processes), waits for each to be healthy, and records
every process it started (PID + start time, see `infra.processes`) right after starting
it, so that a crash or Ctrl-C halfway leaves nothing we cannot find again. `down` stops
only what is recorded, by PID. Both hold an exclusive flock on HOME/stack.lock, so two
`up` at once serialise instead of starting everything twice. Nothing here prints: progress
goes through the `echo` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from infra.endpoints import STATE_FILE, Addresses, addresses, stack_home
from infra.errors import ConfigError, ServiceError
from infra.processes import (
    POLL_INTERVAL,
    ProcessRecord,
    ProcessSpec,
    describe_error,
    is_alive,
    remove_pid_file,
    spawn,
    stop,
    wait_ready,
)
from infra.secrets import secrets_key
from infra.services import PROBE_TIMEOUT, Service, all_services
from infra.settings import Settings

Echo = Callable[[str], None]
STATE_VERSION = 1
EXTERNAL_WAIT = 10.0
"""Seconds `up` waits for an external service to answer before it gives up."""


def _silent(_: str) -> None:
    pass


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str | None
    pid: int | None
    """Set only while the recorded process is alive and still ours."""
    kind: Literal["embedded", "external"]
    healthy: bool
    detail: str


class StackState:
    """The records in HOME/stack.json, in start order; written atomically."""

    def __init__(self, path: Path, records: list[ProcessRecord] | None = None) -> None:
        self.path = path
        self._records = {r.name: r for r in records or []}

    @classmethod
    def load(cls, path: Path) -> StackState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ServiceError(f"cannot read the stack state file {path}: {exc}") from exc
        return cls(path, [ProcessRecord.from_json(item) for item in data.get("processes", [])])

    @property
    def records(self) -> list[ProcessRecord]:
        # Services first, then extra processes: `down` stops in the reverse order.
        items = list(self._records.values())
        return [r for r in items if r.kind == "service"] + [r for r in items if r.kind != "service"]

    def get(self, name: str) -> ProcessRecord | None:
        return self._records.get(name)

    def put(self, record: ProcessRecord) -> None:
        self._records[record.name] = record
        self.save()

    def remove(self, name: str) -> None:
        if self._records.pop(name, None) is not None:
            self.save()

    def save(self) -> None:
        if not self._records:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        data = {
            "version": STATE_VERSION,
            "home": str(self.path.parent),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "processes": [r.to_json() for r in self.records],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path)


class Stack:
    """The local stack under `settings.home`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = stack_home(settings)
        self.services: list[Service] = all_services(settings, self.home)
        self.state_path = self.home / STATE_FILE
        self.lock_path = self.home / "stack.lock"
        self.logs_dir = self.home / "logs"
        self.run_dir = self.home / "run"

    # -- up ---------------------------------------------------------------------------

    async def up(
        self,
        echo: Echo = _silent,
        extra_processes: Sequence[ProcessSpec] = (),
        *,
        timeout: float = 60.0,
    ) -> Addresses:
        """Start what is missing, wait until everything is healthy, return the addresses.

        ServiceError names the service that failed (with the tail of its log); services
        that did come up stay up and recorded, so a later `up` only retries the rest.
        """
        names = [spec.name for spec in extra_processes]
        clash = {s.name for s in self.services} & set(names)
        if clash or len(set(names)) != len(names):
            raise ConfigError(f"extra process names must be unique and not a service's: {names}")
        deadline = time.monotonic() + timeout
        async with self._locked(echo, deadline):
            state = StackState.load(self.state_path)
            await self._gather(
                self._ensure_external(s, echo) if s.external
                else self._ensure_service(s, state, echo, deadline)
                for s in self.services
            )  # fmt: skip
            await self._migrate(echo)
            if not self.settings.secrets.key:  # the node services and the API read it
                secrets_key(self.settings, create=True)
            await self._gather(
                self._ensure_process(spec, state, echo, deadline) for spec in extra_processes
            )
            return addresses(self.settings)

    async def _migrate(self, echo: Echo) -> None:
        """Bring the database schema up to date before anything that uses it starts."""
        from infra.database import connect
        from infra.migrations import load_migrations, migrate

        conn = await connect(addresses(self.settings).database)
        try:
            applied = await migrate(conn, lambda line: echo(f"postgres: {line}"))
        finally:
            await conn.close()
        if not applied:
            echo(f"postgres: schema up to date (migration {len(load_migrations()):04d})")

    @staticmethod
    async def _gather(coroutines: Any) -> None:
        results = await asyncio.gather(*coroutines, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, ServiceError):
                raise error
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ServiceError("\n\n".join(str(e) for e in errors))

    async def _ensure_external(self, service: Service, echo: Echo) -> None:
        address = service.address
        deadline = time.monotonic() + EXTERNAL_WAIT
        while True:
            try:
                detail = await asyncio.wait_for(service.probe(address), PROBE_TIMEOUT + 1)
                echo(f"{service.name}: external at {address} ({detail})")
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise ServiceError(
                        f"{service.name}: external service at {address} does not answer: "
                        f"{describe_error(exc)}"
                    ) from exc
            await asyncio.sleep(POLL_INTERVAL)

    async def _ensure_service(
        self, service: Service, state: StackState, echo: Echo, deadline: float
    ) -> None:
        record = state.get(service.name)
        if record is not None and is_alive(record):
            address = record.address or service.default_address
            check = ProcessSpec(service.name, record.argv, ready=lambda: service.probe(address))
            try:
                await wait_ready(check, record, deadline)
            except ServiceError as exc:
                if is_alive(record):
                    raise ServiceError(
                        f"{exc}\n{service.name} is running (pid {record.pid}) but not healthy; "
                        "`reflux down` then `reflux up` restarts it"
                    ) from None
                # It was dying as we looked (e.g. just killed): restart it below.
            else:
                echo(f"{service.name}: already running at {address} (pid {record.pid})")
                return
        if record is not None:
            echo(f"{service.name}: recorded pid {record.pid} is gone (stale record); restarting")
            await stop(record)  # signals nothing: only collects the exit status if ours
            state.remove(service.name)
            remove_pid_file(self.run_dir, service.name)
        await service.check_ports_free(wait=5.0 if record is not None else 0.0)
        started = time.monotonic()
        await asyncio.to_thread(service.prepare)
        spec = service.process_spec()
        record = await self._start(spec, state, deadline, kind="service")
        try:
            await service.bootstrap()
        except BaseException as exc:
            await self._abandon(record, state)
            if isinstance(exc, Exception) and not isinstance(exc, ServiceError):
                raise ServiceError(f"{service.name}: set-up failed: {describe_error(exc)}") from exc
            raise
        took = time.monotonic() - started
        echo(f"{service.name}: started at {spec.address} (pid {record.pid}, {took:.1f}s)")

    async def _ensure_process(
        self, spec: ProcessSpec, state: StackState, echo: Echo, deadline: float
    ) -> None:
        record = state.get(spec.name)
        if record is not None and is_alive(record):
            if record.argv == [str(a) for a in spec.argv]:
                echo(f"{spec.name}: already running (pid {record.pid})")
                return
            echo(f"{spec.name}: command changed; restarting (pid {record.pid})")
            await stop(record)
        elif record is not None:
            echo(f"{spec.name}: recorded pid {record.pid} is gone (stale record); restarting")
            await stop(record)  # signals nothing: only collects the exit status if ours
        if record is not None:
            state.remove(spec.name)
            remove_pid_file(self.run_dir, spec.name)
        env = {"REFLUX_HOME": str(self.home)}
        if spec.ready_file is not None:
            spec.ready_file.unlink(missing_ok=True)
            env["REFLUX_READY_FILE"] = str(spec.ready_file)
        spec = dataclasses.replace(spec, env={**env, **spec.env})
        started = time.monotonic()
        record = await self._start(spec, state, deadline, kind="process")
        where = f" at {spec.address}" if spec.address else ""
        took = time.monotonic() - started
        echo(f"{spec.name}: started{where} (pid {record.pid}, {took:.1f}s)")

    async def _start(
        self, spec: ProcessSpec, state: StackState, deadline: float, *, kind: str
    ) -> ProcessRecord:
        """Spawn, record at once, wait for readiness; on failure stop it and drop the record."""
        log = self.logs_dir / f"{spec.name}.log"
        record = spawn(spec, log_path=log, run_dir=self.run_dir, kind=kind)
        state.put(record)
        try:
            await wait_ready(spec, record, deadline)
        except BaseException:
            await self._abandon(record, state)
            raise
        return record

    async def _abandon(self, record: ProcessRecord, state: StackState) -> None:
        await stop(record, grace=2.0)
        state.remove(record.name)
        remove_pid_file(self.run_dir, record.name)

    # -- down -------------------------------------------------------------------------

    async def down(self, echo: Echo = _silent, *, grace: float = 10.0) -> None:
        """Stop every recorded process, extra processes first, by its recorded PID
        (SIGTERM or the service's own stop signal, SIGKILL after `grace` seconds)."""
        deadline = time.monotonic() + grace + 30.0
        async with self._locked(echo, deadline):
            state = StackState.load(self.state_path)
            records = state.records
            if not records:
                echo(f"nothing to stop (no processes recorded in {self.state_path})")
                return
            processes = [r for r in reversed(records) if r.kind != "service"]
            services = [r for r in reversed(records) if r.kind == "service"]
            for group in (processes, services):
                await asyncio.gather(*(self._stop_one(r, state, echo, grace) for r in group))

    async def _stop_one(
        self, record: ProcessRecord, state: StackState, echo: Echo, grace: float
    ) -> None:
        if await stop(record, grace=grace):
            echo(f"{record.name}: stopped (pid {record.pid})")
        else:
            echo(f"{record.name}: was not running (pid {record.pid} gone); record removed")
        state.remove(record.name)
        remove_pid_file(self.run_dir, record.name)

    # -- status -----------------------------------------------------------------------

    async def status(self) -> list[ServiceStatus]:
        """Each service (embedded or external) and each recorded extra process, probed now."""
        state = StackState.load(self.state_path)
        checks = [self._service_status(s, state.get(s.name)) for s in self.services]
        extras = [r for r in state.records if r.kind != "service"]
        return list(await asyncio.gather(*checks)) + [_process_status(r) for r in extras]

    async def _service_status(
        self, service: Service, record: ProcessRecord | None
    ) -> ServiceStatus:
        if service.external:
            healthy, detail = await _probe(service, service.address)
            return ServiceStatus(service.name, service.address, None, "external", healthy, detail)
        if record is None:
            return ServiceStatus(
                service.name, service.default_address, None, "embedded", False, "not running"
            )
        address = record.address or service.default_address
        if not is_alive(record):
            detail = f"not running (recorded pid {record.pid} is gone; see {record.log})"
            return ServiceStatus(service.name, address, None, "embedded", False, detail)
        healthy, detail = await _probe(service, address)
        return ServiceStatus(service.name, address, record.pid, "embedded", healthy, detail)

    # -- lock -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, echo: Echo, deadline: float) -> AsyncIterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)  # close-on-exec
        try:
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ServiceError(
                            f"another `reflux up`/`down` still holds {self.lock_path}"
                        ) from None
                    if not told:
                        echo(f"waiting for another `reflux up`/`down` ({self.lock_path})")
                        told = True
                    await asyncio.sleep(POLL_INTERVAL)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock


async def _probe(service: Service, address: str) -> tuple[bool, str]:
    try:
        return True, await asyncio.wait_for(service.probe(address), PROBE_TIMEOUT + 1)
    except Exception as exc:
        return False, describe_error(exc)


def _process_status(record: ProcessRecord) -> ServiceStatus:
    alive = is_alive(record)
    detail = "running" if alive else f"not running (see {record.log})"
    pid = record.pid if alive else None
    return ServiceStatus(record.name, record.address, pid, "embedded", alive, detail)
