"""`code.*` nodes: untrusted Python and shell code given in the workflow, run in the sandbox
(`sandbox` package; backend and allow-list from `REFLUX_SANDBOX_*`).

    - id: score
      node: code.python@1
      with:
        code: |
          def run(inputs):
              return {"total": sum(inputs["values"])}
        inputs: {values: "{{ steps.fetch.output.json.values }}"}
        limits: {timeout: 5s, memory_mb: 256, network: off}

`env` sets environment variables of the code, and is the one param that may carry
`secret('NAME')` (`env: {API_KEY: "{{ secret('API_KEY') }}"}`): the value reaches the code,
and is masked in the step's output and error.

A run that fails, times out or is killed fails the step with `CodeRunError` (not
retried: the same code would do the same again); its details hold the status, the
metrics and the tail of stdout and stderr.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from infra import CodeRunError, NodeError, SandboxError, SandboxSettings, ValidationError
from nodes.sdk import NodeContext, NodeGroup
from sandbox import Backend, CodeRunRequest, CodeRunResult, Limits, open_backend

__all__ = ["group"]

group = NodeGroup("code", "Untrusted Python and shell code, run in the sandbox")

TAIL = 2000
ENV_HELP = "environment variables of the code; the one param where secret() may be used"
SECRET_PARAMS = {"env": "value"}
_backends: dict[str, Backend] = {}


def backend(settings: SandboxSettings) -> Backend:
    """One backend per sandbox configuration in this process (it holds the run gate)."""
    key = settings.model_dump_json()
    if key not in _backends:
        _backends[key] = open_backend(settings)
    return _backends[key]


class PythonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(description="Python source; defines the entry function")
    entry: str = Field(
        "run", description="function called with `inputs`; its return value is the output"
    )
    inputs: Any = None
    files: dict[str, str] = Field(
        default_factory=dict, description="extra text files in the working directory"
    )
    env: dict[str, str] = Field(default_factory=dict, description=ENV_HELP)
    limits: Limits = Field(default_factory=Limits)


class PythonOutput(RootModel[Any]):
    """The entry function's return value, as it returned it."""


class ShellParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(description="a /bin/sh script; the inputs are JSON in $REFLUX_INPUTS_FILE")
    inputs: Any = None
    files: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description=ENV_HELP)
    check: bool = Field(True, description="a non-zero exit status fails the step")
    limits: Limits = Field(default_factory=Limits)


class ShellOutput(BaseModel):
    stdout: str
    stderr: str
    exit_code: int | None
    truncated: bool = False


async def _run(request: CodeRunRequest, ctx: NodeContext) -> CodeRunResult:
    if request.limits.network == "full" and not ctx.settings.sandbox.allow_full_network:
        raise ValidationError(  # the host's loopback holds NATS and PostgreSQL: not for tenants
            f"code.{request.lang}: network: full is off on this platform"
            " (REFLUX_SANDBOX_ALLOW_FULL_NETWORK); use limited"
        )
    try:
        return await backend(ctx.settings.sandbox).run(request)
    except SandboxError as exc:  # the host cannot run sandboxes: an operator's problem
        raise NodeError(str(exc), error_class="SandboxError") from None


def _failure(node: str, result: CodeRunResult) -> CodeRunError:
    return CodeRunError(
        f"{node}: {result.status}: {result.error}",
        details={
            "status": result.status,
            "error_class": result.error_class,
            "stdout": result.stdout[-TAIL:],
            "stderr": result.stderr[-TAIL:],
            "metrics": result.metrics.model_dump(),
        },
    )


EFFECTS: dict[str, Any] = {
    "effects": "write",
    "effects_when": {"limits.network": (["off", False], "none")},
}
"""Code may do anything its network allows: with the network off it only computes."""


@group.node(
    "code.python",
    "1.1.0",  # 1.1: env, where secret() may be used
    params=PythonParams,
    output=PythonOutput,
    tags=("code", "sandbox"),
    secret_params=SECRET_PARAMS,
    **EFFECTS,
)
async def python(params: PythonParams, ctx: NodeContext) -> PythonOutput:
    """Run a Python function in the sandbox; its return value is the step's output."""
    request = CodeRunRequest(
        lang="python",
        code=params.code,
        entry=params.entry,
        inputs=params.inputs,
        files=params.files,
        env=params.env,
        limits=params.limits,
    )
    result = await _run(request, ctx)
    if result.status != "ok":
        raise _failure("code.python", result)
    return PythonOutput(result.output)


@group.node(
    "code.shell",
    "1.1.0",  # 1.1: env, where secret() may be used
    params=ShellParams,
    output=ShellOutput,
    tags=("code", "sandbox"),
    secret_params=SECRET_PARAMS,
    **EFFECTS,
)
async def shell(params: ShellParams, ctx: NodeContext) -> ShellOutput:
    """Run a shell script in the sandbox; stdout, stderr and the exit status are the output."""
    request = CodeRunRequest(
        lang="shell", code=params.code, inputs=params.inputs, files=params.files,
        env=params.env, limits=params.limits,
    )  # fmt: skip
    result = await _run(request, ctx)
    failed = result.status != "ok" and not (
        result.status == "error" and result.error_class == "ExitStatus" and not params.check
    )
    if failed:
        raise _failure("code.shell", result)
    return ShellOutput(
        stdout=result.stdout,
        stderr=result.stderr,
        exit_code=result.metrics.exit_code,
        truncated=result.truncated,
    )
