"""The Docker backend: its container configuration always; real runs only where a Docker
engine is reachable (none runs on the CI machines: those tests skip, saying so)."""

from __future__ import annotations

import textwrap

import pytest

from infra.errors import SandboxError
from infra.settings import SandboxSettings
from sandbox import CodeRunRequest, Limits
from sandbox.container import DockerBackend, container_config
from sandbox.interpreter import BOOTSTRAP, BOOTSTRAP_SOURCE, PackageMount

MARKER = "\x00REFLUX-RESULT-test\x00"


def config(runtimes: tuple[str, ...] = (), **limits: object) -> dict:
    packages = (PackageMount("yaml", "/site/yaml", "/sbx/site/yaml"),)
    return container_config(Limits(**limits), SandboxSettings(), MARKER, packages, runtimes)


def test_container_is_locked_down() -> None:
    c = config(timeout="5s", memory_mb=128, processes=10, tmp_mb=32, open_files=50, file_mb=2)
    assert c["network_mode"] == "none"
    assert c["read_only"] is True
    assert c["user"] == "65534:65534"
    assert c["cap_drop"] == ["ALL"]
    assert c["security_opt"] == ["no-new-privileges"]
    assert (c["mem_limit"], c["memswap_limit"]) == ("128m", "128m")
    assert c["pids_limit"] == 10
    assert c["nano_cpus"] == 1_000_000_000
    assert c["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=32m,mode=1777"}
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in c["ulimits"]}
    assert ulimits == {
        "cpu": (5, 6),
        "nofile": (50, 50),
        "fsize": (2 << 20, 2 << 20),
        "core": (0, 0),
    }
    assert c["volumes"] == {
        str(BOOTSTRAP_SOURCE): {"bind": BOOTSTRAP, "mode": "ro"},
        "/site/yaml": {"bind": "/sbx/site/yaml", "mode": "ro"},
    }
    assert c["command"] == ["python", "-I", "-S", "-B", BOOTSTRAP, "--result-marker", MARKER]
    assert c["image"] == "python:3.11-slim"


def test_gvisor_is_used_when_the_engine_offers_it() -> None:
    assert config()["runtime"] is None
    assert config(runtimes=("runc", "runsc"))["runtime"] == "runsc"
    pinned = SandboxSettings(docker_runtime="kata")
    assert container_config(Limits(), pinned, MARKER, (), ("runsc",))["runtime"] == "kata"


def test_network_full_uses_the_default_bridge() -> None:
    assert config(network="full")["network_mode"] == "bridge"


def test_network_limited_has_only_the_egress_socket() -> None:
    limits = Limits(network="limited")
    c = container_config(limits, SandboxSettings(), MARKER, (), (), "/tmp/reflux-egress-1")
    assert c["network_mode"] == "none"
    assert c["volumes"]["/tmp/reflux-egress-1"] == {"bind": "/sbx/egress.sock", "mode": "ro"}


@pytest.fixture(scope="module")
def docker_backend() -> DockerBackend:
    try:
        return DockerBackend(SandboxSettings(backend="docker"))
    except SandboxError as exc:
        pytest.skip(f"no Docker engine here, so no container runs: {exc}")


def test_unreachable_engine_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="no Docker engine is reachable"):
        DockerBackend(SandboxSettings(backend="docker"))


async def test_container_run_round_trip(docker_backend: DockerBackend) -> None:
    code = textwrap.dedent(
        """
        import socket
        def run(inputs):
            print("hi")
            try:
                socket.create_connection(("1.1.1.1", 53), 2)
                net = "reached"
            except OSError:
                net = "unreachable"
            return {"double": inputs * 2, "net": net}
        """
    )
    result = await docker_backend.run(CodeRunRequest(lang="python", code=code, inputs=21))
    assert result.status == "ok", result.error
    assert (result.output, result.stdout) == ({"double": 42, "net": "unreachable"}, "hi\n")


async def test_container_timeout(docker_backend: DockerBackend) -> None:
    request = CodeRunRequest(
        lang="python", code="import time\ntime.sleep(60)", limits=Limits(timeout_s=1)
    )
    result = await docker_backend.run(request)
    assert result.status == "timeout"
