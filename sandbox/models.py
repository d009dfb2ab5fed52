"""What a sandbox is asked to run and what it answers (seed 002's CodeRunRequest and
CodeRunResult, shaped for Python and shell code given inline)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from infra import parse_duration

Network = Literal["off", "limited", "full"]
RunStatus = Literal["ok", "error", "timeout", "killed"]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, or a duration as workflows write it (`5s`, `2m`)."""


def _network(value: object) -> object:
    # YAML 1.1 reads a bare `off` as false (and `on` as true)
    return {False: "off", True: "full"}.get(value, value) if isinstance(value, bool) else value


class Limits(BaseModel):
    """Resource limits for one run; every one is enforced, none is advisory. Workflows may
    write `timeout` and `cpu` as durations (`5s`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timeout_s: Seconds = Field(
        10.0, gt=0, le=3600, validation_alias=AliasChoices("timeout_s", "timeout")
    )
    """Wall-clock seconds before the whole run (every process it started) is killed."""
    cpu_s: Seconds | None = Field(
        None, gt=0, le=3600, validation_alias=AliasChoices("cpu_s", "cpu")
    )
    """CPU seconds (RLIMIT_CPU); default: the timeout."""
    memory_mb: int = Field(256, ge=32, le=64 * 1024)
    """Address space of each process (RLIMIT_AS)."""
    processes: int = Field(32, ge=1, le=4096)
    """Processes and threads the run may have at once."""
    open_files: int = Field(64, ge=16, le=65536)
    file_mb: int = Field(16, ge=1, le=4096)
    """Largest file the code may write (RLIMIT_FSIZE)."""
    tmp_mb: int = Field(64, ge=1, le=16 * 1024)
    """Size of the private writable /tmp (also the working directory)."""
    output_kb: int = Field(1024, ge=1, le=64 * 1024)
    """Captured stdout and stderr, each; beyond it output is cut and the run killed."""
    result_mb: int = Field(16, ge=1, le=1024)
    """The entry function's return value, as JSON."""
    network: Annotated[Network, BeforeValidator(_network)] = "off"
    """off: no network at all (not even loopback to the host); limited: HTTP(S) through a
    proxy that refuses non-public addresses (`sandbox.egress`); full: the host's network."""

    @property
    def cpu_seconds(self) -> int:
        return max(1, round(self.cpu_s if self.cpu_s is not None else self.timeout_s))


ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "REFLUX_INPUTS_FILE",
    }
)


class CodeRunRequest(BaseModel):
    lang: Literal["python", "shell"]
    code: str = Field(max_length=1024 * 1024)
    entry: str = "run"
    """python: the function called with the inputs (its return value is the output); it
    may be absent, then the module's top level is the program. shell: unused."""
    inputs: Any = None
    """JSON given to the entry function (python) or as $REFLUX_INPUTS_FILE (shell)."""
    files: dict[str, str] = Field(default_factory=dict)
    """Extra text files written into the working directory before the run."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables of the code (set inside the sandbox, never on a command line)."""
    limits: Limits = Field(default_factory=Limits)

    @field_validator("env")
    @classmethod
    def _plain_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if (
                not ENV_NAME.match(name)
                or name in RESERVED_ENV
                or name.startswith(("LD_", "PYTHON"))
            ):
                raise ValueError(f"env name {name!r} must be A-Z, 0-9 and _ and not a reserved one")
            if "\0" in value:
                raise ValueError(f"env {name!r} contains NUL")
        return env

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if not name or "/" in name or name in (".", "..") or "\0" in name:
                raise ValueError(f"file name {name!r} must be a plain name, without '/'")
        return files


class RunMetrics(BaseModel):
    duration_ms: float
    peak_mem_mb: float | None = None
    exit_code: int | None = None
    """The program's exit status; negative: killed by that signal."""


class CodeRunResult(BaseModel):
    status: RunStatus
    output: Any = None
    """python: the entry function's return value; shell: {stdout, stderr, exit_code}."""
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    """Output went past `limits.output_kb` and was cut."""
    error: str | None = None
    """One line: what went wrong, e.g. `ImportError: requests is not on the allow-list`."""
    error_class: str | None = None
    metrics: RunMetrics
