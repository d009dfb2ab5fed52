"""The process backend: each run is a child in new namespaces, made with bubblewrap.

    bwrap (as root, no user namespace)       new mount, PID, IPC, UTS, cgroup and network
      └─ setpriv --reuid=UID …               namespaces; capabilities dropped, no_new_privs
           └─ python -I -S bootstrap.py      lowers its rlimits, then runs the code

Without bubblewrap, util-linux does it: `setpriv --pdeathsig KILL unshare … jail.py`,
where `sandbox.jail` builds the same filesystem and drops to the run's uid itself (about
40 ms slower to start).

What the code sees is `sandbox.layout`: `/usr` and the interpreter read-only (their
site-packages covered), the allow-listed packages, a private sized `/tmp` (its working
directory) and `/dev/shm`, its own `/proc`, a minimal `/dev`, an empty `/etc` but for the
loader cache. Not the project, not `REFLUX_HOME`, not `/root`, not the host's processes.
Network off: a namespace with only its own loopback; limited: the same, plus the egress
proxy's socket (`sandbox.egress`); full: the host's network.

Each run gets its own uid (drawn from a range no account uses), so the process limit
(RLIMIT_NPROC, counted per uid across the host) is the run's alone and runs cannot
signal one another. A seccomp filter (`sandbox.seccomp`) refuses new user namespaces,
mounts, ptrace and other kernel surface.

The wall-clock timeout, and output past its cap, kill the launcher's process group with
SIGKILL; the PID namespace's init dies with it, and the kernel kills every process left in
the namespace, including those that left the session or process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import NamedTuple

from infra import SandboxError, SandboxSettings
from sandbox import cgroup, seccomp
from sandbox.egress import EgressProxy
from sandbox.interpreter import BOOTSTRAP, bootstrap_input, host_interpreter, package_mounts
from sandbox.layout import ENV, SHM_MB, bwrap_args, filesystem
from sandbox.models import CodeRunRequest, CodeRunResult, Limits
from sandbox.outcome import Observed, conclude

__all__ = ["ProcessBackend"]

UID_BASE = 1_600_000_000
UID_SPAN = 100_000_000
log = logging.getLogger(__name__)

KILL_GRACE_S = 10.0
KIB = 1024
MIB = 1024 * 1024
JAIL_SOURCE = Path(__file__).with_name("jail.py")
JAIL_ROOT = "/run/reflux-sandbox"
"""Where the jail mounts a run's root (a tmpfs, in the run's mount namespace only)."""


def memory_cap(limits: Limits) -> int:
    """The run's cgroup memory limit: its processes' memory plus what its tmpfs can hold
    (tmpfs pages are charged to the writer's cgroup)."""
    return (limits.memory_mb + limits.tmp_mb + SHM_MB) * MIB


def _launcher(choice: str) -> tuple[str, str]:
    """(launcher, its executable): bubblewrap where installed, else util-linux unshare."""
    bwrap, unshare = shutil.which("bwrap"), shutil.which("unshare")
    if choice in ("auto", "bwrap") and bwrap:
        return "bwrap", bwrap
    if choice == "bwrap":
        raise SandboxError("bubblewrap is not installed (Debian: apt-get install bubblewrap)")
    if unshare and shutil.which("setpriv"):
        return "unshare", unshare
    raise SandboxError(
        "neither bubblewrap nor util-linux unshare/setpriv is installed: the process sandbox "
        "needs one (Debian: apt-get install bubblewrap)"
    )


class ProcessBackend:
    name = "process"

    def __init__(self, settings: SandboxSettings) -> None:
        if os.geteuid() != 0:
            raise SandboxError(
                "the process sandbox needs root (to build namespaces and give each run its "
                "own uid; the code never runs as root): run the node service as root, or "
                "use REFLUX_SANDBOX_BACKEND=docker"
            )
        self.launcher, self.tool = _launcher(settings.launcher)
        self.settings = settings
        self.interpreter = host_interpreter()
        self.packages = package_mounts(settings.packages)
        self._filter = seccomp.filter_program()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self.egress = EgressProxy(settings.allow_networks)
        self.cgroups = cgroup.find_parents()
        if self.cgroups is None:
            log.warning("sandbox: no writable cgroup here; memory is capped per process only")
        if self.launcher == "unshare":
            os.makedirs(JAIL_ROOT, mode=0o755, exist_ok=True)

    def launch(
        self, limits: Limits, uid: int, fds: Fds, egress: str | None = None
    ) -> tuple[list[str], bytes]:
        """The command line for one run, and what its setup fd must hold (bwrap: the
        seccomp filter; the jail: its whole plan). `egress`: the proxy's socket."""
        setup_fd, result_fd = fds.setup, fds.result
        py = self.interpreter.executable
        mounts = filesystem(limits, self.interpreter, self.packages, egress)
        payload = [py, "-I", "-S", "-B", BOOTSTRAP, "--result-fd", str(result_fd)]
        network = ["--net"] if limits.network != "full" else []
        if self.launcher == "unshare":
            argv = ["setpriv", "--pdeathsig", "KILL", "--", self.tool, "--mount", "--pid"]
            argv += ["--ipc", "--uts", "--cgroup", *network, "--fork", "--kill-child"]
            argv += ["--propagation", "private", "--", py, "-I", "-S", "-B", str(JAIL_SOURCE)]
            plan = {
                "root": JAIL_ROOT,
                "mounts": [m.as_json() for m in mounts],
                "uid": uid,
                "env": ENV,
                "seccomp": self._filter.hex(),
                "argv": payload,
                "loopback": bool(network),
                "info_fd": fds.info,
            }
            return [*argv, str(setup_fd)], json.dumps(plan).encode()
        argv = [self.tool, "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
        argv += ["--info-fd", str(fds.info)]
        argv += ["--unshare-net"] if network else []
        argv += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):  # for setpriv, which drops them
            argv += ["--cap-add", cap]
        argv += [*bwrap_args(mounts), "--chdir", "/tmp", "--clearenv"]
        for key, value in ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--seccomp", str(setup_fd), "--"]
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", *payload]
        return argv, self._filter

    async def run(self, request: CodeRunRequest) -> CodeRunResult:
        async with self._gate:
            group = None
            if self.cgroups is not None:
                limits = request.limits
                group = cgroup.RunCgroup(self.cgroups, memory_cap(limits), limits.processes + 8)
            try:
                return conclude(request, await self._observe(request, group))
            finally:
                if group is not None:
                    group.remove()

    async def _observe(self, request: CodeRunRequest, group: cgroup.RunCgroup | None) -> Observed:
        limits = request.limits
        setup_fd = os.memfd_create("reflux-sandbox-setup", 0)
        result_read, result_write = os.pipe()
        info_read, info_write = os.pipe()
        try:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            fds = Fds(setup_fd, result_write, info_write)
            egress = await self.egress.socket() if limits.network == "limited" else None
            argv, setup = self.launch(limits, uid, fds, egress)
            if group is not None:
                argv = cgroup.enter_command(group.procs, argv)
            os.write(setup_fd, setup)
            os.lseek(setup_fd, 0, os.SEEK_SET)
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
                start_new_session=True,
            )
        except BaseException:
            os.close(result_read)
            os.close(info_read)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        killed = _Killer(proc)
        result_pipe, result_transport = await _pipe_reader(result_read)
        info_pipe, info_transport = await _pipe_reader(info_read)
        ns_init = asyncio.ensure_future(_namespace_init(info_pipe))
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
            await _ended(await ns_init)
        finally:
            killed.everything()
            result_transport.close()
            info_transport.close()
            for task in (reads, ns_init):
                if not task.done():
                    task.cancel()
        seen = Observed(
            exit_code=_status(status),
            result=result,
            stdout=stdout,
            stderr=stderr,
            duration_ms=(time.perf_counter() - started) * 1000,
            timed_out=timed_out,
            overflow=killed.reason if killed.reason in ("stdout", "stderr", "result") else None,
        )
        if group is not None:
            seen.peak_mem_mb = group.peak_mb()
            seen.oom_killed = group.oom_killed()
        if not result and stderr.startswith((b"bwrap: ", b"jail: ", b"unshare: ")):
            line = stderr.decode(errors="replace").splitlines()[0]
            raise SandboxError(f"the sandbox could not start: {line}")
        return seen


class Fds(NamedTuple):
    """The descriptors a run's launcher inherits."""

    setup: int
    """A memfd: bwrap's seccomp filter, or the jail's plan."""
    result: int
    """The pipe the bootstrap writes its result to."""
    info: int
    """The pipe bwrap (--info-fd), or the jail, writes the namespace init's host PID to."""


async def _namespace_init(info: asyncio.StreamReader) -> int | None:
    """A pidfd of the PID namespace's init, from the launcher's info JSON."""
    try:
        pid = json.loads(await info.read())["child-pid"]
        return os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, ProcessLookupError):
        return None


async def _ended(pidfd: int | None) -> None:
    """Wait for the namespace's init to exit. The launcher may exit first (bwrap as soon as
    the code's process does; either when killed), while the init goes on a moment, killing
    what the code left behind. Once the init has exited, nothing of the run is left."""
    if pidfd is None:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    def exited() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        async with asyncio.timeout(KILL_GRACE_S):
            await gone
    except TimeoutError:
        raise SandboxError("a sandbox's namespace did not end after its run") from None
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


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
