"""Sandbox start-up overhead: a trivial run through the process backend (bubblewrap,
setpriv, the bootstrap, result pipe) beside a plain `python -c pass` started the same way
(asyncio subprocess, pipes), interleaved in the same run. Goal (DESIGN): p50 within 50 ms
of the plain interpreter.

Usage: python bench/sandbox_startup.py [--runs 200] [--launcher bwrap|unshare]   (as root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.settings import SandboxSettings  # noqa: E402
from sandbox import CodeRunRequest  # noqa: E402
from sandbox.interpreter import host_interpreter  # noqa: E402
from sandbox.process import ProcessBackend  # noqa: E402


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1),
    }


async def plain(python: str) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-c", "pass",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await proc.communicate()
    return time.perf_counter() - started


async def sandboxed(backend: ProcessBackend, request: CodeRunRequest) -> float:
    started = time.perf_counter()
    result = await backend.run(request)
    elapsed = time.perf_counter() - started
    assert result.status == "ok" and result.output == 1, result
    return elapsed


async def main(runs: int, launcher: str) -> None:
    python = host_interpreter().executable
    backend = ProcessBackend(SandboxSettings(launcher=launcher))
    request = CodeRunRequest(lang="python", code="def run(inputs):\n    return 1")
    for _ in range(5):  # warm the page cache
        await plain(python)
        await sandboxed(backend, request)
    base, sand = [], []
    for i in range(runs):
        base.append(await plain(python))
        sand.append(await sandboxed(backend, request))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{runs} runs", file=sys.stderr)
    b, s = quantiles(base), quantiles(sand)
    report = {
        "runs": runs,
        "launcher": backend.launcher,
        "plain_python": b,
        "sandbox": s,
        "overhead_p50_ms": round(s["p50_ms"] - b["p50_ms"], 1),
        "overhead_p95_ms": round(s["p95_ms"] - b["p95_ms"], 1),
        "ratio_p50": round(s["p50_ms"] / b["p50_ms"], 2),
        "goal_overhead_p50_ms": 50,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--launcher", choices=["auto", "bwrap", "unshare"], default="auto")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.launcher))
