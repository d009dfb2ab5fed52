"""The process backend against hostile code: every attempt is contained, ends with a clear
status and message, and leaves the host as it was. Real bubblewrap, real kernel limits.

Each test runs under both launchers (bubblewrap, and unshare with `sandbox.jail`). They
need root and bubblewrap (`scripts/test` installs it from Debian); they fail rather than
skip without them, so CI can never pass them vacuously.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import SandboxSettings
from sandbox import CodeRunRequest, CodeRunResult
from sandbox.process import UID_BASE, UID_SPAN, ProcessBackend
from tests.helpers.httpserver import HttpTestServer

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def backend(request: pytest.FixtureRequest) -> ProcessBackend:
    """Every test runs with either launcher: bubblewrap, and the util-linux fallback."""
    settings = SandboxSettings(packages=["yaml"], concurrency=8, launcher=request.param)
    made = ProcessBackend(settings)
    assert made.launcher == request.param
    return made


async def run(
    backend: ProcessBackend, code: str, inputs: Any = None, **limits: Any
) -> CodeRunResult:
    lang = limits.pop("lang", "python")
    request = CodeRunRequest(lang=lang, code=textwrap.dedent(code), inputs=inputs, limits=limits)
    return await backend.run(request)


def sandbox_processes(uid: int) -> list[int]:
    """Host PIDs alive as `uid` (every run has its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                owner = entry.stat().st_uid
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if owner == uid and state != "Z":
                found.append(int(entry.name))
    return found


ANNOUNCE_UID = "import os as _os, sys as _sys\nprint(_os.getuid(), file=_sys.stderr, flush=True)\n"


def announced_uid(result: CodeRunResult) -> int:
    """The uid the run printed first on stderr (code prefixed with ANNOUNCE_UID)."""
    return int(result.stderr.split()[0])


@pytest.fixture
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP listener on 127.0.0.1 recording who connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            seen.append(peer[0])
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join()
    server.close()


# -- ordinary code ------------------------------------------------------------------


async def test_inputs_and_outputs_round_trip(backend):
    inputs = {"text": "héllo ✓", "n": 2**53, "f": 0.1, "list": [None, True, {"x": []}]}
    result = await run(
        backend, "def run(inputs):\n    return {'echo': inputs, 'len': len(inputs['text'])}", inputs
    )  # noqa: E501
    assert result.status == "ok", result.error
    assert result.output == {"echo": inputs, "len": 7}
    assert result.metrics.exit_code == 0 and result.metrics.peak_mem_mb > 0


async def test_prints_files_async_entry_and_allowed_package(backend):
    code = """
        import asyncio, sys, yaml
        from helper import double

        async def run(inputs):
            print("to stdout")
            print("to stderr", file=sys.stderr)
            await asyncio.sleep(0)
            return yaml.safe_load(open("data.yaml").read())["n"] + double(inputs)
    """
    request = CodeRunRequest(
        lang="python",
        code=textwrap.dedent(code),
        inputs=20,
        files={"data.yaml": "n: 2\n", "helper.py": "def double(x):\n    return 2 * x\n"},
    )
    result = await backend.run(request)
    assert result.status == "ok", result.error
    assert (result.output, result.stdout, result.stderr) == (42, "to stdout\n", "to stderr\n")


async def test_threads_and_subprocesses_work(backend):
    # glibc starts threads with clone3, which the filter answers ENOSYS: it falls back to clone
    code = """
        import subprocess, threading
        def run(i):
            out = []
            t = threading.Thread(target=lambda: out.append("thread"))
            t.start()
            t.join()
            out.append(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout)
            return out
    """
    result = await run(backend, code)
    assert (result.status, result.output) == ("ok", ["thread", "child\n"]), result.error


async def test_module_without_entry_is_the_program(backend):
    result = await run(backend, "print(sum(range(10)))")
    assert (result.status, result.output, result.stdout) == ("ok", None, "45\n")


async def test_exception_reports_class_message_and_line(backend):
    result = await run(backend, "def run(inputs):\n    x = 1\n    raise ValueError('bad value')")
    assert result.status == "error"
    assert result.error == "ValueError: bad value (line 3)"
    assert result.error_class == "ValueError"
    assert 'File "<code>", line 3, in run' in result.stderr


async def test_a_return_value_that_is_not_json_is_an_error(backend):
    result = await run(backend, "def run(inputs):\n    return {1, 2}")
    assert result.status == "error" and result.error_class == "TypeError"
    assert "not JSON" in result.error


async def test_shell_script_gets_inputs_and_reports_exit_status(backend):
    result = await run(
        backend, 'cat "$REFLUX_INPUTS_FILE"; echo oops >&2; exit 3', [1, 2], lang="shell"
    )  # noqa: E501
    assert result.status == "error" and result.error_class == "ExitStatus"
    assert result.output == {"stdout": "[1, 2]", "stderr": "oops\n", "exit_code": 3}
    assert result.error == "exited with status 3: oops"
    ok = await run(backend, "echo $((6 * 7))", lang="shell")
    assert (ok.status, ok.stdout, ok.metrics.exit_code) == ("ok", "42\n", 0)


async def test_network_full_reaches_the_host(backend, listener):
    port, seen = listener
    code = f"import socket\ndef run(i):\n    socket.create_connection(('127.0.0.1', {port}), 2).close()"  # noqa: E501
    result = await run(backend, code, network="full")
    assert result.status == "ok", result.error
    for _ in range(40):  # the connection is in the backlog: the listener's accept may lag
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen == ["127.0.0.1"]


LIMITED = """
    import json, socket, urllib.request
    def run(i):
        out = dict()
        for name, url in (("allowed", "{url}"), ("private", "http://10.1.2.3/")):
            try:
                out[name] = urllib.request.urlopen(url, timeout=5).read().decode()
            except urllib.error.HTTPError as exc:
                out[name] = [exc.code, exc.read().decode().strip()]
        try:
            socket.create_connection(("127.0.0.1", {port}), 2)
            out["direct"] = "reached"
        except OSError as exc:
            out["direct"] = type(exc).__name__
        return out
"""


async def test_network_limited_goes_through_the_guarded_proxy(backend):
    with HttpTestServer() as server:
        code = LIMITED.format(url=server.url("/json"), port=server.port)
        limited = ProcessBackend(
            SandboxSettings(launcher=backend.launcher, allow_networks=["127.0.0.1/32"])
        )
        result = await run(limited, code, network="limited")
        assert result.status == "ok", result.error
        assert json.loads(result.output["allowed"]) == {"hello": "world"}
        status, message = result.output["private"]
        assert status == 403 and "refused to connect to 10.1.2.3 (private)" in message
        assert result.output["direct"] == "ConnectionRefusedError"  # no route but the proxy
        assert len(server.requests) == 1
        # without the allow-list, loopback is refused like any private address
        result = await run(backend, code, network="limited")
        status, message = result.output["allowed"]
        assert status == 403 and "(loopback)" in message
        assert len(server.requests) == 1


# -- containment --------------------------------------------------------------------


async def test_no_connection_to_a_loopback_listener(backend, listener):
    port, seen = listener
    code = f"import socket\ndef run(i):\n    socket.create_connection(('127.0.0.1', {port}), 2)"
    result = await run(backend, code)
    assert result.status == "error"
    assert result.error_class == "ConnectionRefusedError", result.error
    await asyncio.sleep(0.3)
    assert seen == []


async def test_no_connection_to_a_public_address(backend):
    code = "import socket\ndef run(i):\n    socket.create_connection(('1.1.1.1', 53), 2)"
    result = await run(backend, code)
    assert result.status == "error"
    assert "Network is unreachable" in result.error


async def test_no_name_resolution(backend):
    result = await run(
        backend, "import socket\ndef run(i):\n    socket.getaddrinfo('pypi.org', 443)"
    )
    assert result.status == "error" and result.error_class == "gaierror"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "/etc/passwd",
        str(PROJECT / "pyproject.toml"),
        str(Path.home() / ".bashrc"),
        os.path.realpath(os.sys.prefix) + "/pyvenv.cfg",
    ],
)
async def test_host_files_are_not_there(backend, path):
    result = await run(backend, f"def run(i):\n    return open({path!r}).read()")
    assert result.status == "error"
    assert result.error_class == "FileNotFoundError", result.error


async def test_reflux_home_is_not_there(backend, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "objects").mkdir(parents=True)
    (home / "objects" / "secret").write_text("s3cret")
    monkeypatch.setenv("REFLUX_HOME", str(home))
    code = f"import os\ndef run(i):\n    return os.environ.get('REFLUX_HOME'), os.path.exists({str(home)!r})"  # noqa: E501
    result = await run(backend, code)
    assert (result.status, result.output) == ("ok", [None, False])


async def test_installed_packages_beyond_the_allow_list_are_not_there(backend):
    result = await run(backend, "import httpx")
    assert result.status == "error" and result.error_class == "ModuleNotFoundError"
    assert "httpx is not available in the sandbox" in result.error
    assert "allow-list (yaml" in result.error
    # removing the guard does not help: the files are not mounted
    code = "import sys\nsys.meta_path.pop(0)\nsys.path.extend(__import__('site').getsitepackages())\nimport httpx"  # noqa: E501
    result = await run(backend, code)
    assert result.error == "ModuleNotFoundError: No module named 'httpx' (line 4)"


async def test_other_processes_are_not_visible(backend):
    me = os.getpid()
    code = f"""
        import os
        def run(i):
            try:
                open("/proc/{me}/environ").read()
                seen = "read"
            except OSError as exc:
                seen = type(exc).__name__
            try:
                open("/proc/1/environ").read()
                init = "read"
            except OSError as exc:
                init = type(exc).__name__
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            return seen, init, pids
    """
    result = await run(backend, code)
    assert result.status == "ok", result.error
    seen, init, pids = result.output
    assert seen == "FileNotFoundError"
    assert init == "PermissionError"  # the namespace's init belongs to root
    assert pids == [1, 2]


@pytest.mark.parametrize(
    "path", ["/usr/evil", "/etc/evil", "/evil", "/sbx/site/evil", "/proc/evil"]
)
async def test_nothing_is_writable_outside_tmp(backend, path):
    result = await run(backend, f"def run(i):\n    open({path!r}, 'w').write('x')")
    assert result.status == "error"
    assert result.error_class in ("OSError", "PermissionError", "FileNotFoundError"), result.error
    assert not os.path.exists(path)


async def test_no_privileges_no_namespaces(backend):
    code = """
        import ctypes, os
        def run(i):
            libc = ctypes.CDLL(None, use_errno=True)
            out = {}
            for name, flag in [("user", 0x10000000), ("net", 0x40000000), ("mount", 0x20000)]:
                out[name] = (libc.unshare(flag), os.strerror(ctypes.get_errno()))
            try:
                os.setuid(0)
                out["setuid"] = "root"
            except PermissionError:
                out["setuid"] = "refused"
            return out
    """
    result = await run(backend, code)
    assert result.status == "ok", result.error
    refused = [-1, "Operation not permitted"]
    assert result.output == {"user": refused, "net": refused, "mount": refused, "setuid": "refused"}


async def test_fork_bomb_is_capped_and_cleaned_up(backend):
    code = """
        import os, time
        def run(i):
            forked = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    forked += 1
            except OSError as exc:
                return forked, exc.strerror, os.getuid()
    """
    result = await run(backend, code, processes=16)
    assert result.status == "ok", result.error
    forked, error, uid = result.output
    assert forked < 16 and error == "Resource temporarily unavailable"
    assert sandbox_processes(uid) == []


async def test_memory_beyond_the_limit_fails(backend):
    result = await run(
        backend, "def run(i):\n    return len(bytearray(2 * 1024**3))", memory_mb=256
    )
    assert result.status == "error"
    assert result.error == "MemoryError: out of memory (limit 256 MB)"


def needs_cgroups(backend: ProcessBackend) -> None:
    if backend.cgroups is None:
        pytest.skip("no writable cgroup on this host: memory is capped per process only")


async def test_processes_together_stay_under_the_memory_cap(backend):
    needs_cgroups(backend)
    code = """
        import os, time
        def run(i):
            kids = []
            for _ in range(4):
                pid = os.fork()
                if pid == 0:
                    block = bytearray(150 * 1024 * 1024)
                    for j in range(0, len(block), 4096):
                        block[j] = 1
                    time.sleep(2)
                    os._exit(0)
                kids.append(pid)
            return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in kids]
    """
    result = await run(backend, code, memory_mb=200, tmp_mb=16)  # cap: 200 + 16 + 16 MB
    assert result.status == "ok", result.error
    assert -9 in result.output  # the OOM killer took some children: 4 x 150 MB > 232 MB
    assert result.metrics.peak_mem_mb <= 232


async def test_the_code_killed_for_memory_says_so(backend):
    needs_cgroups(backend)
    code = """
        import os, time
        def run(i):
            r, w = os.pipe()
            if os.fork() == 0:
                os.read(r, 1)
                block = bytearray(100 * 1024 * 1024)
                for j in range(0, len(block), 4096):
                    block[j] = 1
                time.sleep(5)
                os._exit(0)
            big = bytearray(200 * 1024 * 1024)
            for j in range(0, len(big), 4096):
                big[j] = 1
            os.write(w, b"x")
            time.sleep(5)
            return "survived"
    """
    result = await run(backend, code, memory_mb=256, tmp_mb=16)  # the largest goes first
    assert (result.status, result.error_class) == ("killed", "MemoryLimit")
    assert result.error == "out of memory: the run reached its limit (256 MB + 16 MB tmp); killed"


async def test_cpu_spin_past_the_timeout_is_killed(backend):
    code = ANNOUNCE_UID + "def run(i):\n    while True:\n        pass"
    result = await run(backend, code, timeout=1)
    assert result.status == "timeout"
    assert result.error in ("timed out after 1s (wall clock); killed",
                            "CPU time limit (1s) exceeded (SIGXCPU)")  # fmt: skip
    assert result.metrics.duration_ms < 5000
    assert sandbox_processes(announced_uid(result)) == []


async def test_cpu_limit_below_the_timeout(backend):
    result = await run(backend, "def run(i):\n    while True:\n        pass", timeout=10, cpu=1)
    assert result.status == "timeout"
    assert result.error == "CPU time limit (1s) exceeded (SIGXCPU)"
    assert result.metrics.duration_ms < 5000


async def test_sleep_past_the_timeout_is_killed(backend):
    result = await run(backend, "import time\ndef run(i):\n    time.sleep(60)", timeout=0.5)
    assert result.status == "timeout"
    assert result.error == "timed out after 0.5s (wall clock); killed"
    assert result.metrics.duration_ms < 5000


async def test_printing_a_gigabyte_is_cut_and_killed(backend):
    code = """
        import sys
        chunk = "x" * (1 << 20)
        def run(i):
            for _ in range(1024):
                sys.stdout.write(chunk)
    """
    result = await run(backend, ANNOUNCE_UID + textwrap.dedent(code), output_kb=256)
    assert result.status == "killed" and result.truncated
    assert result.error == "stdout went past 256 KiB; killed"
    assert len(result.stdout) == 256 * 1024
    assert sandbox_processes(announced_uid(result)) == []


async def test_filling_the_disk_stops_at_the_tmp_size(backend):
    code = """
        def run(i):
            with open("/tmp/fill", "wb") as f:
                while True:
                    f.write(b"x" * (1 << 20))
    """
    result = await run(backend, code, tmp_mb=8, file_mb=1024)
    assert result.status == "error"
    assert "No space left on device" in result.error


async def test_file_size_limit(backend):
    result = await run(
        backend, "def run(i):\n    open('big', 'wb').write(b'x' * (2 << 20))", file_mb=1
    )
    assert result.status == "error" and "File too large" in result.error


async def test_killing_its_parent_fails_and_the_host_is_unharmed(backend):
    code = """
        import os, signal
        def run(i):
            out = []
            for pid in (os.getppid(), 1, -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                    out.append("killed")
                except OSError as exc:
                    out.append(type(exc).__name__)
            return out
    """
    result = await run(backend, code)
    assert result.status == "ok", result.error
    # its parent is the namespace's init (root): refused; kill(-1) reaches only itself's uid
    assert result.output[:2] == ["PermissionError", "PermissionError"]
    assert (await run(backend, "def run(i):\n    return 1")).output == 1  # the backend still works


async def test_no_background_process_survives_the_run(backend):
    code = """
        import os, subprocess, time
        def run(i):
            subprocess.Popen(["sleep", "4242"], start_new_session=True)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "4243"])
                os._exit(0)
            time.sleep(0.2)
            return os.getuid()
    """
    result = await run(backend, code)
    assert result.status == "ok", result.error
    assert sandbox_processes(result.output) == []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert entry.read_bytes() not in (b"sleep\x004242\x00", b"sleep\x004243\x00")
        except OSError:
            continue


async def test_runs_in_parallel_do_not_share_a_process_limit(backend):
    code = """
        import os, time
        def run(i):
            pids = []
            for _ in range(6):
                pid = os.fork()
                if pid == 0:
                    time.sleep(1)
                    os._exit(0)
                pids.append(pid)
            for pid in pids:
                os.waitpid(pid, 0)
            return len(pids), os.getuid()
    """
    results = await asyncio.gather(*(run(backend, code, processes=8) for _ in range(4)))
    assert [(r.status, r.output[0]) for r in results] == [("ok", 6)] * 4
    uids = {r.output[1] for r in results}
    assert len(uids) == 4 and all(UID_BASE <= uid < UID_BASE + UID_SPAN for uid in uids)
