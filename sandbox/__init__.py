"""Run untrusted Python and shell code under CPU, memory, time, process, file-size and
network limits.

    models       CodeRunRequest / CodeRunResult, the shape every backend takes and gives
    process      the default backend: namespaces (bubblewrap, or unshare + jail), own uid
    layout       the filesystem a process sandbox sees
    jail         the unshare launcher's inside half (mounts, uid drop, seccomp)
    seccomp      the system-call filter
    cgroup       a cgroup per run: memory and process caps, peak memory, OOM kills
    interpreter  which interpreter and allow-listed packages are mounted
    container    the Docker backend (gVisor when the engine offers it)
    bootstrap    the program inside the sandbox that runs the code and reports its result
    outcome      exit status and captured output -> one status and a one-line reason

`open_backend(settings)` picks the backend the settings name; `await backend.run(request)`
never raises for what the code does (that is in the result's status), only when the
sandbox itself cannot be set up (`SandboxError`).
"""

from __future__ import annotations

from typing import Protocol

from infra import SandboxSettings, lazy
from sandbox.models import CodeRunRequest, CodeRunResult, Limits

__all__ = [
    "Backend",
    "CodeRunRequest",
    "CodeRunResult",
    "Limits",
    "ProcessBackend",
    "host_interpreter",
    "open_backend",
]


class Backend(Protocol):
    name: str

    async def run(self, request: CodeRunRequest) -> CodeRunResult: ...


def open_backend(settings: SandboxSettings) -> Backend:
    if settings.backend == "docker":
        from sandbox.container import DockerBackend

        return DockerBackend(settings)
    from sandbox.process import ProcessBackend

    return ProcessBackend(settings)


__getattr__ = lazy(
    __name__,
    globals(),
    {
        "sandbox.interpreter": ["host_interpreter"],
        "sandbox.process": ["ProcessBackend"],
    },
)
