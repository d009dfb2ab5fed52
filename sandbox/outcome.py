"""From what a backend saw of a run (exit status, captured output, the bootstrap's result)
to the `CodeRunResult` the caller gets: one status and a one-line reason."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import Any

from sandbox.models import CodeRunRequest, CodeRunResult, RunMetrics

STDERR_TAIL = 300


@dataclass
class Observed:
    """What a backend saw of one run."""

    exit_code: int | None
    """The sandbox's exit status; negative: killed by that signal; None: never ended."""
    result: bytes
    """The bootstrap's result JSON (empty when it did not get to write it)."""
    stdout: bytes
    stderr: bytes
    duration_ms: float
    timed_out: bool = False
    overflow: str | None = None
    """Which capture went past its cap ("stdout", "stderr", "result"): the run was killed."""
    peak_mem_mb: float | None = None
    """Of the whole run (its cgroup's charge), where known."""
    oom_killed: bool = False
    """The kernel killed a process of the run for its cgroup's memory limit."""


def conclude(request: CodeRunRequest, seen: Observed) -> CodeRunResult:
    limits = request.limits
    stdout = seen.stdout.decode("utf-8", "replace")
    stderr = seen.stderr.decode("utf-8", "replace")
    report = _parse(seen.result)
    code_exit = report.get("exit_code", 0 if report else seen.exit_code)
    peaks = [p for p in (seen.peak_mem_mb, report.get("peak_mem_mb")) if p is not None]
    peak = max(peaks) if peaks else None

    def result(status: str, error: str | None = None, error_class: str | None = None,
               output: Any = None) -> CodeRunResult:  # fmt: skip
        return CodeRunResult(
            status=status,  # type: ignore[arg-type]
            output=output,
            stdout=stdout,
            stderr=stderr,
            truncated=seen.overflow in ("stdout", "stderr"),
            error=error,
            error_class=error_class,
            metrics=RunMetrics(
                duration_ms=round(seen.duration_ms, 2), peak_mem_mb=peak, exit_code=code_exit
            ),
        )

    if seen.timed_out:
        return result("timeout", f"timed out after {limits.timeout_s:g}s (wall clock); killed",
                      "Timeout")  # fmt: skip
    if seen.overflow == "result":
        return result("killed", f"the result went past {limits.result_mb} MB; killed",
                      "OutputLimit")  # fmt: skip
    if seen.overflow:
        return result("killed", f"{seen.overflow} went past {limits.output_kb} KiB; killed",
                      "OutputLimit")  # fmt: skip
    if seen.oom_killed and (not report or (code_exit or 0) < 0):
        cap = f"{limits.memory_mb} MB + {limits.tmp_mb} MB tmp"
        return result("killed", f"out of memory: the run reached its limit ({cap}); killed",
                      "MemoryLimit")  # fmt: skip
    if code_exit is not None and code_exit < 0:
        return _signalled(result, -code_exit, limits.cpu_seconds)
    if request.lang == "shell":
        output = {"stdout": stdout, "stderr": stderr, "exit_code": code_exit}
        if not report:
            return result("error", _exited(seen.exit_code, stderr), "SandboxExit", output)
        if code_exit == 0:
            return result("ok", output=output)
        return result("error", _exited(code_exit, stderr), "ExitStatus", output)
    if not report:
        return result("error", _exited(seen.exit_code, stderr), "SandboxExit")
    if report["status"] == "ok":
        return result("ok", output=report.get("output"))
    return result("error", report.get("error") or "failed", report.get("error_class"))


def _signalled(result: Any, signo: int, cpu_seconds: int) -> CodeRunResult:
    name = _signal_name(signo)
    if signo == signal.SIGXCPU:
        return result("timeout", f"CPU time limit ({cpu_seconds}s) exceeded ({name})", "CpuLimit")
    if signo == signal.SIGXFSZ:
        return result("error", f"file size limit exceeded ({name})", "FileSizeLimit")
    return result("killed", f"killed by {name}", "Signal")


def _exited(status: int | None, stderr: str) -> str:
    tail = stderr.strip().splitlines()[-1][:STDERR_TAIL] if stderr.strip() else ""
    return f"exited with status {status}" + (f": {tail}" if tail else "")


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def _parse(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        report = json.loads(data)
    except ValueError:
        return {}
    return report if isinstance(report, dict) and "status" in report else {}
