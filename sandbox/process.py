"""The process backend: each run is a child in new namespaces, made with bubblewrap.

    bwrap (as root, no user namespace)       new mount, PID, IPC, UTS, cgroup and network
      └─ setpriv --reuid=UID …               namespaces; capabilities dropped, no_new_privs
           └─ python -I -S bootstrap.py      lowers its rlimits, then runs the code

What the code sees: `/usr` and the interpreter read-only (their site-packages covered),
the allow-listed packages at `/sbx/site`, a private `/tmp` (its working directory) and
`/dev/shm` of a fixed size, its own `/proc`, a minimal `/dev`, an empty `/etc` but for
the loader cache. Not the project, not `REFLUX_HOME`, not `/root`, not the host's
processes. Network off: a namespace with only its own loopback.

Each run gets its own uid (drawn from a range no account uses), so the process limit
(RLIMIT_NPROC, counted per uid across the host) is the run's alone and runs cannot
signal one another. A seccomp filter (`sandbox.seccomp`) refuses new user namespaces,
mounts, ptrace and other kernel surface.

The wall-clock timeout, and output past its cap, kill bwrap's process group with
SIGKILL; bwrap's init in the PID namespace dies with it, and the kernel kills every
process left in the namespace, including those that left the session or process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import time
from pathlib import Path

from infra.errors import SandboxError
from infra.settings import SandboxSettings
from sandbox import seccomp
from sandbox.interpreter import (
    BOOTSTRAP,
    BOOTSTRAP_SOURCE,
    SITE,
    bootstrap_input,
    host_interpreter,
    package_mounts,
)
from sandbox.models import CodeRunRequest, CodeRunResult, Limits
from sandbox.outcome import Observed, conclude

__all__ = ["ProcessBackend"]

UID_BASE = 1_600_000_000
UID_SPAN = 100_000_000
SHM_MB = 16
KILL_GRACE_S = 10.0
KIB = 1024
MIB = 1024 * 1024
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl")


class ProcessBackend:
    name = "process"

    def __init__(self, settings: SandboxSettings) -> None:
        bwrap = shutil.which(settings.bwrap)
        if bwrap is None:
            raise SandboxError(
                f"bubblewrap ({settings.bwrap!r}) is not installed: the process sandbox needs "
                "it (Debian: apt-get install bubblewrap)"
            )
        if os.geteuid() != 0:
            raise SandboxError(
                "the process sandbox runs bubblewrap as root (to give each run its own uid); "
                "run the node service as root, or use REFLUX_SANDBOX_BACKEND=docker"
            )
        self.bwrap = bwrap
        self.settings = settings
        self.interpreter = host_interpreter()
        self.packages = package_mounts(settings.packages)
        self._filter = seccomp.filter_program()
        self._gate = asyncio.Semaphore(settings.concurrency)

    def command(self, limits: Limits, uid: int, seccomp_fd: int, result_fd: int) -> list[str]:
        """The bwrap command line for one run."""
        py = self.interpreter
        argv = [self.bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        if limits.network == "off":
            argv.append("--unshare-net")
        argv += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):  # for setpriv, which drops them
            argv += ["--cap-add", cap]
        argv += ["--ro-bind", "/usr", "/usr"]
        for path in _ROOT_LINKS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        if not py.prefix.startswith("/usr/"):
            for parent in reversed(Path(py.prefix).parents[:-1]):
                argv += ["--perms", "0755", "--dir", str(parent)]
            argv += ["--ro-bind", py.prefix, py.prefix]
        for hidden in py.hidden:
            argv += ["--perms", "0555", "--tmpfs", hidden]
        argv += ["--perms", "0755", "--dir", "/sbx", "--perms", "0755", "--dir", SITE]
        argv += ["--ro-bind", str(BOOTSTRAP_SOURCE), BOOTSTRAP]
        for mount in self.packages:
            argv += ["--ro-bind", mount.source, mount.target]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--perms", "1777", "--size", str(limits.tmp_mb * MIB), "--tmpfs", "/tmp"]
        argv += ["--perms", "1777", "--size", str(SHM_MB * MIB), "--tmpfs", "/dev/shm"]
        argv += ["--perms", "0755", "--dir", "/etc"]
        argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        argv += ["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
        if limits.network == "full":
            for path in _NETWORK_FILES:
                argv += ["--ro-bind-try", path, path]
        argv += ["--remount-ro", "/", "--chdir", "/tmp", "--clearenv"]
        env = {"HOME": "/tmp", "TMPDIR": "/tmp", "PATH": "/usr/local/bin:/usr/bin:/bin",
               "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox"}  # fmt: skip
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += ["--seccomp", str(seccomp_fd), "--"]
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"]
        argv += [py.executable, "-I", "-S", "-B", BOOTSTRAP, "--result-fd", str(result_fd)]
        return argv

    async def run(self, request: CodeRunRequest) -> CodeRunResult:
        async with self._gate:
            return conclude(request, await self._observe(request))

    async def _observe(self, request: CodeRunRequest) -> Observed:
        limits = request.limits
        filter_fd = os.memfd_create("reflux-seccomp", 0)
        result_read, result_write = os.pipe()
        try:
            os.write(filter_fd, self._filter)
            os.lseek(filter_fd, 0, os.SEEK_SET)
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *self.command(limits, uid, filter_fd, result_write),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(filter_fd, result_write),
                start_new_session=True,
            )
        except BaseException:
            os.close(result_read)
            raise
        finally:
            os.close(filter_fd)
            os.close(result_write)
        killed = _Killer(proc)
        result_pipe, result_transport = await _pipe_reader(result_read)
        assert proc.stdin and proc.stdout and proc.stderr
        output_cap = limits.output_kb * KIB
        reads = asyncio.ensure_future(
            asyncio.gather(
                _feed(proc.stdin, bootstrap_input(request, self.packages)),
                _read_capped(proc.stdout, output_cap, killed, "stdout"),
                _read_capped(proc.stderr, output_cap, killed, "stderr"),
                _read_capped(result_pipe, limits.result_mb * MIB, killed, "result"),
                proc.wait(),
            )
        )
        try:
            done, _ = await asyncio.wait([reads], timeout=limits.timeout_s)
            timed_out = not done
            if timed_out:
                killed("timeout")
                done, _ = await asyncio.wait([reads], timeout=KILL_GRACE_S)
                if not done:
                    raise SandboxError("a killed sandbox did not end: its output pipes stay open")
            _, stdout, stderr, result, status = reads.result()
        finally:
            killed.everything()
            result_transport.close()
            if not reads.done():
                reads.cancel()
        seen = Observed(
            exit_code=_status(status),
            result=result,
            stdout=stdout,
            stderr=stderr,
            duration_ms=(time.perf_counter() - started) * 1000,
            timed_out=timed_out,
            overflow=killed.reason if killed.reason in ("stdout", "stderr", "result") else None,
        )
        if not result and stderr.startswith(b"bwrap: "):
            line = stderr.decode(errors="replace").splitlines()[0]
            raise SandboxError(f"the sandbox could not start: {line}")
        return seen


class _Killer:
    """Kills the sandbox's process group, remembering the first reason why."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.everything()

    def everything(self) -> None:
        if self.proc.returncode is None:  # once reaped, its group id may be someone else's
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _status(returncode: int) -> int:
    """bwrap passes on its child's exit status; a child killed by signal N exits 128+N."""
    if returncode > 128 and returncode - 128 < signal.NSIG:
        return -(returncode - 128)
    return returncode


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()


async def _read_capped(stream: asyncio.StreamReader, cap: int, killed: _Killer, name: str) -> bytes:
    """Up to `cap` bytes of `stream`; past it, kill the run and drain the rest (a pipe left
    unread would keep asyncio from ever seeing it close, and the process from ending)."""
    data = bytearray()
    over = False
    while chunk := await stream.read(256 * KIB):
        if not over:
            data += chunk
            over = len(data) > cap
            if over:
                killed(name)
    return bytes(data[:cap])


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MIB)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport
