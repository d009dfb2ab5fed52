"""The secret store: sealed at rest under a key that is not in the database, scoped by
namespace and kind, listed without values."""

from __future__ import annotations

import base64
import os

import asyncpg
import pytest

from infra.errors import NotFoundError, SecretError
from infra.secrets import SecretsKey, secrets_key
from infra.settings import SecretsSettings, Settings
from registry.secrets import SecretStore

KEY = SecretsKey(b"k" * 32)


async def test_values_are_sealed_and_bound_to_their_scope(db: asyncpg.Pool) -> None:
    store = SecretStore(db, KEY, "ada")
    assert await store.set("acme", "API_KEY", "v-acme-1") is True
    assert await store.set("acme", "API_KEY", "v-acme-2") is False  # replaced
    await store.set("beta", "API_KEY", "v-beta")
    assert await store.value("acme", "API_KEY") == "v-acme-2"
    assert await store.value("beta", "API_KEY") == "v-beta"
    assert await store.value("gamma", "API_KEY") is None
    assert await store.value("acme", "API_KEY", "webhook") is None  # another kind
    raw = await db.fetch("SELECT sealed::text AS s, nonce FROM secrets")
    assert all("v-acme" not in row["s"] for row in raw)
    # a row copied under another namespace does not open there
    await db.execute(
        "UPDATE secrets SET nonce = a.nonce, sealed = a.sealed FROM secrets a"
        " WHERE secrets.namespace = 'beta' AND a.namespace = 'acme'"
    )
    with pytest.raises(SecretError, match="does not open with this key"):
        await store.value("beta", "API_KEY")


async def test_another_key_is_a_clear_error(db: asyncpg.Pool) -> None:
    await SecretStore(db, KEY).set("default", "DB_PASSWORD", "pw-123456")
    other = SecretStore(db, SecretsKey(b"o" * 32))
    with pytest.raises(SecretError, match="sealed with another key"):
        await other.value("default", "DB_PASSWORD")


async def test_listing_shows_no_values_and_delete_forgets(db: asyncpg.Pool) -> None:
    store = SecretStore(db, KEY, "ada")
    await store.set("acme", "A_KEY", "value-a-1")
    await store.set("acme", "HOOK", "value-h-1", "webhook")
    listed = await store.list("acme")
    assert [(s.name, s.kind, s.updated_by) for s in listed] == [
        ("A_KEY", "secret", "ada"),
        ("HOOK", "webhook", "ada"),
    ]
    assert "value" not in repr(listed)
    await store.delete("acme", "A_KEY")
    assert await store.value("acme", "A_KEY") is None
    with pytest.raises(NotFoundError, match="no secret 'A_KEY' in namespace 'acme'"):
        await store.delete("acme", "A_KEY")


async def test_bad_names_and_empty_values_are_refused(db: asyncpg.Pool) -> None:
    store = SecretStore(db, KEY)
    for name in ("lower", "1ABC", "A-B", ""):
        with pytest.raises(SecretError, match="bad secret name"):
            await store.set("default", name, "value-1")
    for short in ("", "abc"):
        with pytest.raises(SecretError, match="at least 4 characters: shorter ones cannot be"):
            await store.set("default", "SHORT", short)


async def test_the_environment_answers_for_the_default_namespace_only(
    db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFLUX_SECRET_FROM_ENV", "env-1234")
    monkeypatch.setenv("REFLUX_WEBHOOK_KEY_FROM_ENV", "hook-1234")
    store = SecretStore(db, None)
    assert await store.value("default", "FROM_ENV") == "env-1234"
    assert await store.value("acme", "FROM_ENV") is None
    assert await store.value("default", "FROM_ENV", "webhook") == "hook-1234"


def test_the_key_comes_from_settings_or_a_private_file(tmp_path: os.PathLike[str]) -> None:
    settings = Settings(home=tmp_path)
    with pytest.raises(SecretError, match="no secrets key"):
        secrets_key(settings)
    made = secrets_key(settings, create=True)
    path = tmp_path / "secrets.key"  # type: ignore[operator]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert secrets_key(settings) == made
    given = base64.b64encode(b"g" * 32).decode()
    assert secrets_key(Settings(secrets=SecretsSettings(key=given))).key == b"g" * 32
    with pytest.raises(SecretError, match="must be 32 bytes"):
        secrets_key(Settings(secrets=SecretsSettings(key=base64.b64encode(b"x").decode())))
