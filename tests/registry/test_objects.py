"""The object store as its users see it, on both backends: a local directory and S3.

The S3 backend runs against moto in server mode, over real HTTP: moto stands in for S3's
protocol here, because no real S3-compatible server installs offline. moto accepts any
signature, so credentials and authorization are not tested.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from infra.errors import ConfigError, ObjectStoreError
from infra.ports import free_port, free_ports
from infra.settings import ObjectStoreSettings, Settings
from registry.objects import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    object_key,
    object_store,
)

pytestmark = pytest.mark.timeout(60)


@dataclass
class Backend:
    store: ObjectStore
    where: str
    """What a message about a missing object must name: the directory or the bucket."""
    fingerprint: Callable[[str], object]
    """Something about the stored object that changes whenever it is written."""
    corrupt: Callable[[str, bytes], None]
    """Replace the stored bytes behind the store's back."""


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the module, on its own port (xdist workers each start theirs)."""
    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and none of the developer's own AWS config leaking in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def s3_client(endpoint: str) -> Any:
    """The test's own client, to arrange and inspect buckets behind the store's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def new_bucket(endpoint: str) -> str:
    """A fresh versioned bucket: each write of an object adds a version we can count."""
    name = f"objects-{uuid.uuid4().hex[:16]}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def local_backend(root: Path) -> Backend:
    store = LocalObjectStore(root)

    def fingerprint(key: str) -> object:
        stat = store.path(key).stat()
        return (stat.st_ino, stat.st_mtime_ns)

    def corrupt(key: str, data: bytes) -> None:
        store.path(key).write_bytes(data)

    return Backend(store, str(root), fingerprint, corrupt)


def s3_backend(endpoint: str) -> Backend:
    bucket = new_bucket(endpoint)
    store = S3ObjectStore(bucket, endpoint=endpoint)
    client = s3_client(endpoint)

    def fingerprint(key: str) -> object:
        listing = client.list_object_versions(Bucket=bucket, Prefix=store.object_name(key))
        return sorted(version["VersionId"] for version in listing.get("Versions", []))

    def corrupt(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.object_name(key), Body=data)

    return Backend(store, bucket, fingerprint, corrupt)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path / "objects")
    request.getfixturevalue("aws_env")
    return s3_backend(request.getfixturevalue("moto_endpoint"))


@pytest.mark.parametrize("size", [0, 11, 3 * 1024 * 1024 + 7])
async def test_put_then_get_returns_the_bytes(backend: Backend, size: int) -> None:
    data = os.urandom(size)

    key = await backend.store.put(data)

    assert key == "sha256:" + hashlib.sha256(data).hexdigest()
    assert await backend.store.get(key) == data


async def test_putting_the_same_bytes_again_writes_nothing(backend: Backend) -> None:
    data = b"the same bytes, twice"
    key = await backend.store.put(data)
    first = backend.fingerprint(key)

    assert await backend.store.put(data) == key
    assert backend.fingerprint(key) == first


async def test_exists_after_put_only(backend: Backend) -> None:
    key = object_key(b"not yet")

    assert not await backend.store.exists(key)
    await backend.store.put(b"not yet")
    assert await backend.store.exists(key)


async def test_missing_object_names_the_key_and_where_it_looked(backend: Backend) -> None:
    key = object_key(b"never stored")

    with pytest.raises(ObjectStoreError) as caught:
        await backend.store.get(key)

    message = str(caught.value)
    assert key in message and backend.where in message and "not found" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "key",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
        "a" * 64,
        "sha256:../../" + "a" * 58,
        "sha256:" + "a" * 64 + "\n",
    ],
)
async def test_malformed_key_is_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ObjectStoreError, match="malformed object key"):
        await backend.store.get(key)
    with pytest.raises(ObjectStoreError, match="malformed object key"):
        await backend.store.exists(key)


async def test_corrupted_object_is_detected(backend: Backend) -> None:
    key = await backend.store.put(b"original content")
    backend.corrupt(key, b"original c0ntent")

    with pytest.raises(ObjectStoreError, match="corrupt") as caught:
        await backend.store.get(key)
    assert key in str(caught.value)


def test_uri_and_describe_say_where_objects_live(tmp_path: Path) -> None:
    key = object_key(b"x")
    digest = key.removeprefix("sha256:")
    tmp_path = tmp_path.resolve()
    local = LocalObjectStore(tmp_path / "objects")
    s3 = S3ObjectStore("bucket-a", endpoint="http://127.0.0.1:9000", prefix="team")

    assert local.uri(key) == f"file://{tmp_path}/objects/sha256/{digest[:2]}/{digest}"
    assert local.describe() == f"local directory {tmp_path / 'objects'}"
    assert s3.uri(key) == f"s3://bucket-a/team/sha256/{digest}"
    assert s3.describe() == "S3 bucket bucket-a at http://127.0.0.1:9000"
    assert S3ObjectStore("b").describe() == "S3 bucket b at AWS S3"


async def test_local_put_of_truncated_object_repairs_it(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    key = await store.put(b"complete object")
    store.path(key).write_bytes(b"compl")

    await store.put(b"complete object")

    assert await store.get(key) == b"complete object"


async def test_local_concurrent_puts_leave_one_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    data = os.urandom(512 * 1024)

    keys = await asyncio.gather(*(store.put(data) for _ in range(16)))

    assert set(keys) == {object_key(data)}
    files = [p for p in (tmp_path / "objects").rglob("*") if p.is_file()]
    assert files == [store.path(keys[0])]


async def test_missing_bucket_is_named(moto_endpoint: str, aws_env: None) -> None:
    store = S3ObjectStore("no-such-bucket", endpoint=moto_endpoint)
    expected = f"S3 bucket 'no-such-bucket' does not exist at {moto_endpoint}"

    with pytest.raises(ObjectStoreError, match=expected):
        await store.put(b"anything")
    with pytest.raises(ObjectStoreError, match=expected):
        await store.get(object_key(b"anything"))


async def test_unreachable_endpoint_is_a_retryable_one_liner(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = S3ObjectStore("bucket", endpoint=endpoint)

    with pytest.raises(ObjectStoreError, match=f"cannot reach S3 at {endpoint}") as caught:
        await store.get(object_key(b"anything"))
    assert caught.value.retryable and "\n" not in str(caught.value)


def test_settings_without_bucket_choose_the_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=Path("home"), objects=ObjectStoreSettings(bucket=None, endpoint=None))

    store = object_store(settings)

    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path.resolve() / "home" / "objects"


def test_settings_with_bucket_choose_s3(tmp_path: Path) -> None:
    objects = ObjectStoreSettings(bucket="b", endpoint="http://minio:9000", prefix="p/")

    store = object_store(Settings(home=tmp_path, objects=objects))

    assert isinstance(store, S3ObjectStore)
    assert store.describe() == "S3 bucket b at http://minio:9000"
    assert store.uri(object_key(b"")).startswith("s3://b/p/sha256/")


def test_endpoint_without_bucket_is_a_config_error(tmp_path: Path) -> None:
    objects = ObjectStoreSettings(bucket=None, endpoint="http://minio:9000")

    with pytest.raises(ConfigError, match="REFLUX_S3_BUCKET"):
        object_store(Settings(home=tmp_path, objects=objects))
