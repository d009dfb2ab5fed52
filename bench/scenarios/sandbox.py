"""Sandbox start-up: a trivial run through the process backend (namespaces, seccomp, the
bootstrap, result pipe) beside a plain `python -I -S -c pass` started the same way
(asyncio subprocess, pipes), interleaved."""

from __future__ import annotations

import asyncio
import time

from bench.figures import Figure, ms, p50, p95
from bench.runner import Bench
from infra import SandboxSettings
from sandbox import CodeRunRequest, ProcessBackend, host_interpreter

NAME = "sandbox"


async def plain(python: str) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-c", "pass",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await proc.communicate()
    return time.perf_counter() - started


async def run(bench: Bench) -> list[Figure]:
    runs = 20 if bench.quick else 200
    python = host_interpreter().executable
    backend = ProcessBackend(SandboxSettings())
    request = CodeRunRequest(lang="python", code="def run(inputs):\n    return 1")
    base, ours = [], []
    for i in range(runs + 5):  # the first 5 warm the page cache
        took_plain = await plain(python)
        started = time.perf_counter()
        result = await backend.run(request)
        took = time.perf_counter() - started
        assert result.status == "ok" and result.output == 1, result
        if i >= 5:
            base.append(ms(took_plain))
            ours.append(ms(took))
    overhead = [o - b for o, b in zip(ours, base, strict=True)]
    return [
        Figure(
            NAME, f"trivial run ({backend.launcher})", p50(ours), "ms", p95(ours), p50(base),
            p95(base), "plain python -c pass",
        ),
        Figure(NAME, "start-up overhead over it", p50(overhead), "ms", p95(overhead), goal=50.0),
    ]  # fmt: skip
