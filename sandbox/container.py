"""The Docker backend: each run is a fresh container (REFLUX_SANDBOX_BACKEND=docker).

The container has no network (`limited`: only the egress proxy's socket, mounted in;
`full`: the default bridge), a read-only root, a sized tmpfs at /tmp,
memory (swap included), CPU and process limits, every capability dropped,
no-new-privileges, an unprivileged user, and the gVisor runtime (`runsc`) when the engine
offers it. The bootstrap and the allow-listed packages are mounted read-only from the
host, so the image needs only a Python of the same minor version.

A container has no third stream for the result, so the bootstrap writes it on stdout
after a random marker, once the code is done; the host splits there.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from typing import Any

from infra import SandboxError, SandboxSettings
from sandbox.egress import EgressProxy
from sandbox.interpreter import (
    BOOTSTRAP,
    BOOTSTRAP_SOURCE,
    EGRESS_SOCKET,
    PackageMount,
    bootstrap_input,
    package_mounts,
)
from sandbox.models import CodeRunRequest, CodeRunResult, Limits
from sandbox.outcome import Observed, conclude

__all__ = ["DockerBackend", "container_config"]

NOBODY = "65534:65534"
KIB = 1024
MIB = 1024 * 1024


def container_config(
    limits: Limits,
    settings: SandboxSettings,
    marker: str,
    packages: tuple[PackageMount, ...] = (),
    runtimes: tuple[str, ...] = (),
    egress: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `client.containers.create` for one run; `egress` is the host
    path of the egress proxy's socket (network: limited)."""
    from docker.types import Ulimit

    volumes = {str(BOOTSTRAP_SOURCE): {"bind": BOOTSTRAP, "mode": "ro"}}
    volumes.update({m.source: {"bind": m.target, "mode": "ro"} for m in packages})
    if egress is not None:
        volumes[egress] = {"bind": EGRESS_SOCKET, "mode": "ro"}
    runtime = settings.docker_runtime or ("runsc" if "runsc" in runtimes else None)
    cpu = limits.cpu_seconds
    return {
        "image": settings.docker_image,
        "command": ["python", "-I", "-S", "-B", BOOTSTRAP, "--result-marker", marker],
        "user": NOBODY,
        "working_dir": "/tmp",
        "environment": {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"},
        "network_mode": "bridge" if limits.network == "full" else "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",
        "nano_cpus": 1_000_000_000,
        "pids_limit": limits.processes,
        "ulimits": [
            Ulimit(name="cpu", soft=cpu, hard=cpu + 1),
            Ulimit(name="nofile", soft=limits.open_files, hard=limits.open_files),
            Ulimit(name="fsize", soft=limits.file_mb * MIB, hard=limits.file_mb * MIB),
            Ulimit(name="core", soft=0, hard=0),
        ],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "volumes": volumes,
        "runtime": runtime,
        "stdin_open": True,
        "labels": {"reflux.sandbox": "1"},
    }


class DockerBackend:
    name = "docker"

    def __init__(self, settings: SandboxSettings) -> None:
        import docker

        try:
            self.client = docker.from_env()
            self.client.ping()
            runtimes = tuple((self.client.info().get("Runtimes") or {}).keys())
        except Exception as exc:
            raise SandboxError(
                f"no Docker engine is reachable (DOCKER_HOST or /var/run/docker.sock): {exc}"
            ) from None
        self.settings = settings
        self.runtimes = runtimes
        self.egress = EgressProxy(settings.allow_networks)
        self.packages = package_mounts(settings.packages)
        self._gate = asyncio.Semaphore(settings.concurrency)

    async def run(self, request: CodeRunRequest) -> CodeRunResult:
        async with self._gate:
            limited = request.limits.network == "limited"
            egress = await self.egress.socket() if limited else None
            seen = await asyncio.to_thread(self._observe, request, egress)
            return conclude(request, seen)

    def _observe(self, request: CodeRunRequest, egress: str | None) -> Observed:
        from docker.errors import ImageNotFound

        limits = request.limits
        marker = f"\x00REFLUX-RESULT-{secrets.token_hex(8)}\x00"
        config = container_config(
            limits, self.settings, marker, self.packages, self.runtimes, egress
        )
        try:
            container = self.client.containers.create(**config)
        except ImageNotFound:
            image = self.settings.docker_image
            raise SandboxError(f"image {image} is not on the engine: docker pull {image}") from None
        reason: list[str] = []

        def kill(why: str) -> None:
            if not reason:
                reason.append(why)
            try:
                container.kill()
            except Exception:  # already gone
                pass

        watchdog = threading.Timer(limits.timeout_s, kill, args=("timeout",))
        try:
            sock = container.attach_socket(params={"stdin": 1, "stream": 1})
            started = time.perf_counter()
            container.start()
            watchdog.start()
            raw = getattr(sock, "_sock", sock)
            raw.sendall(bootstrap_input(request, self.packages))
            raw.shutdown(socket.SHUT_WR)
            stdout, stderr = bytearray(), bytearray()
            stdout_cap = limits.output_kb * KIB + len(marker) + 1 + limits.result_mb * MIB
            caps = ((stdout, stdout_cap, "stdout"), (stderr, limits.output_kb * KIB, "stderr"))
            stream = container.attach(stdout=True, stderr=True, stream=True, demux=True, logs=True)
            for chunks in stream:
                for (buf, cap, name), chunk in zip(caps, chunks, strict=True):
                    if chunk and not reason:
                        buf += chunk[: cap - len(buf)]
                        if len(buf) >= cap:
                            kill(name)
            status = container.wait()["StatusCode"]
            duration_ms = (time.perf_counter() - started) * 1000
        finally:
            watchdog.cancel()
            try:
                container.remove(force=True)
            except Exception:
                pass
        user_out, found, result = bytes(stdout).rpartition(b"\n" + marker.encode())
        if not found:
            user_out, result = bytes(stdout), b""
        why = reason[0] if reason else None
        return Observed(
            exit_code=-(status - 128) if status > 128 else status,
            result=result,
            stdout=user_out[: limits.output_kb * KIB],
            stderr=bytes(stderr),
            duration_ms=duration_ms,
            timed_out=why == "timeout",
            overflow=why if why in ("stdout", "stderr") else None,
        )
