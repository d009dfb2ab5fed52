"""The API while its PostgreSQL is down: every request that needs the registry answers 503
with one line saying so (never 500), and once the database is back the same app answers
again, its pool reconnecting by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from fastapi.testclient import TestClient

from infra.database import create_pool
from infra.settings import ApiSettings, DatabaseSettings, Settings
from reflux.api import create_app
from reflux.api.errors import database_unreachable
from registry.tokens import TokenStore
from tests.helpers.postgres import OwnPostgres

pytestmark = pytest.mark.timeout(180)

FLOW = "id: unavailable\nsteps:\n  - {id: one, node: core.transform@1, with: {value: 1}}\n"


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    own = OwnPostgres(tmp_path / "pg")
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


@pytest.fixture
async def token(postgres: OwnPostgres) -> str:
    pool = await create_pool(postgres.url, max_size=1)
    try:
        return (await TokenStore(pool, "test").create("admin", name="test"))[1]
    finally:
        await pool.close()


@pytest.fixture
def api(postgres: OwnPostgres, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        home=tmp_path,
        database=DatabaseSettings(url=postgres.url),
        api=ApiSettings(rate_limit=1000, burst=1000, pool_size=2),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def unavailable(response) -> str:
    assert response.status_code == 503, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "Unavailable", error
    assert "\n" not in error["message"]
    return str(error["message"])


async def test_503_while_the_database_is_down_then_answers_again(
    postgres: OwnPostgres, token: str, api: TestClient
):
    auth = {"Authorization": f"Bearer {token}"}
    assert api.get("/workflows", headers=auth).status_code == 200

    await postgres.stop()
    # the pool's connections were cut (they fail mid-use), then new ones are refused
    for _ in range(3):
        message = unavailable(api.get("/workflows", headers=auth))
        assert message.startswith("the registry database is unreachable: "), message
    unavailable(api.get("/runs", headers=auth))
    unavailable(api.post("/workflows", headers=auth, json={"source": FLOW}))  # audited too
    health = api.get("/health")
    assert health.status_code == 503 and "\n" not in health.json()["error"]["message"]

    await postgres.start()
    assert api.get("/workflows", headers=auth).status_code == 200
    assert api.get("/health").status_code == 200


def test_only_errors_from_the_database_client_count_as_unreachable():
    assert database_unreachable(asyncpg.CannotConnectNowError("starting up")) == (
        "the registry database is unreachable: starting up"
    )
    # An OSError of the API's own (a file, a socket to another service) is not the database's.
    assert database_unreachable(ConnectionRefusedError(111, "refused")) is None
    assert database_unreachable(asyncpg.InterfaceError("cannot do that")) is None
    assert database_unreachable(asyncpg.UniqueViolationError("duplicate")) is None
