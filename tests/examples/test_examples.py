"""The examples the README and `./scripts/demo` use: every workflow validates against the
built-in nodes, and the demo's flaky upstream answers 503 (with Retry-After) to the share
of calls it is told, as a real HTTP server on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orchestrator import validate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_workflow_validates(path: Path):
    spec, problems = validate_file(path, None)
    assert spec is not None, problems


def test_the_flaky_upstream_fails_the_share_it_is_told():
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "flaky_upstream.py"), "--share", "0.5", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        answers = [httpx.get(f"{url}/orders?order={i}", timeout=5) for i in range(200)]
        busy = [a for a in answers if a.status_code == 503]
        assert 0.4 < len(busy) / len(answers) < 0.6
        assert all(a.headers["retry-after"] == "1" for a in busy)
        ok = next(a for a in answers if a.status_code == 200)
        assert ok.json() == {"order": str(answers.index(ok)), "amount": 42}
    finally:
        server.terminate()
        server.wait(timeout=10)
