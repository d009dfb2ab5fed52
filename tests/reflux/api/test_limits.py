"""Rate and size limits, on an API process of the test's own started with low limits
(`reflux api`, as `reflux up` runs it)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from infra.ports import free_port
from tests.helpers.stack import CLI, RunningStack
from tests.helpers.waiting import eventually
from tests.reflux.api.conftest import auth


@pytest.fixture(scope="module")
def strict_api(stack: RunningStack) -> Iterator[str]:
    port = free_port()
    env = {
        **stack.env,
        "REFLUX_API_PORT": str(port),
        "REFLUX_API_RATE_LIMIT": "2",
        "REFLUX_API_BURST": "5",
        "REFLUX_API_MAX_BODY_BYTES": "2000",
    }
    log_path = stack.home / f"strict-api-{port}.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen([*CLI, "api"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if proc.poll() is not None:  # it will not come up: say why at once
                pytest.fail(f"the API exited: {log_path.read_text()[-2000:]}")
            try:
                return httpx.get(f"{url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(healthy, timeout=30, every=0.1, what=f"the strict API's /health at {url}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_too_many_requests_get_429_with_retry_after(strict_api, tokens):
    with httpx.Client(base_url=strict_api, headers=auth(tokens["viewer"])) as api:
        statuses = [api.get("/nodes") for _ in range(12)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert statuses[0].status_code == 200
    first = limited[0]
    assert int(first.headers["Retry-After"]) >= 1
    assert first.json()["error"]["code"] == "RateLimited"
    # another token has its own bucket
    with httpx.Client(base_url=strict_api, headers=auth(tokens["author"])) as other:
        assert other.get("/nodes").status_code == 200


def test_oversized_bodies_are_413(strict_api, tokens):
    big = {"source": "x" * 5000}
    with httpx.Client(base_url=strict_api, headers=auth(tokens["admin"])) as api:
        declared = api.post("/workflows", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"] == {
            "code": "PayloadTooLarge",
            "message": "the request body is larger than 2000 bytes",
            "details": {},
        }

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"source": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        streamed = api.post(
            "/workflows", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "PayloadTooLarge"
