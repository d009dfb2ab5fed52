"""A content-addressed object store: bytes in, `sha256:<hex>` out; a local directory or S3.

The key is the hash of the bytes, which buys three things. A put is idempotent, so retries
and two workers storing the same value write one object. A key recorded in Temporal history
or the registry can never come to mean other bytes. And a reader checks what it got instead
of trusting the disk or the network: every `get` re-hashes, so a flipped bit or a truncated
upload is an `ObjectStoreError`, never a wrong value.

Every process of one deployment must use the same store, or a key written by one is
unreadable by another: `object_store(settings)` is the one place that chooses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from infra import ConfigError, ObjectStoreError, Settings, stack_home

_KEY = re.compile(r"sha256:([0-9a-f]{64})")


def object_key(data: bytes) -> str:
    """The key `data` is stored under: `sha256:` and 64 lowercase hex digits."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digest(key: str) -> str:
    match = _KEY.fullmatch(key)
    if match is None:
        raise ObjectStoreError(
            f"malformed object key {key!r}: expected 'sha256:' and 64 lowercase hex digits"
        )
    return match.group(1)


def _verified(key: str, data: bytes, where: str) -> bytes:
    actual = object_key(data)
    if actual != key:
        raise ObjectStoreError(f"object {key} at {where} is corrupt: its content is {actual}")
    return data


class ObjectStore(ABC):
    """Where artifacts and large values live, addressed by the hash of their bytes."""

    @abstractmethod
    async def put(self, data: bytes) -> str:
        """Store `data` and return its key; storing bytes already there writes nothing."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The bytes under `key`, checked against it; `ObjectStoreError` if missing or corrupt."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (its content is not checked)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where the object under `key` lives, as a URI (`file://…`, `s3://…`)."""

    @abstractmethod
    def describe(self) -> str:
        """The store in one line, for status output and error messages."""


class LocalObjectStore(ObjectStore):
    """Objects as files `root/sha256/<first 2 hex>/<hex>`, for a single machine.

    A file only ever appears under its final name complete and synced (temp file in the same
    directory, fsync, `os.replace`), so a crash mid-write leaves at worst a stray temp file,
    never a truncated object that a later put would skip over.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        """The file that holds the object under `key`."""
        digest = _digest(key)
        return self.root / "sha256" / digest[:2] / digest

    async def put(self, data: bytes) -> str:
        # Hashing and writing megabytes would stall every other task on the loop.
        return await asyncio.to_thread(self._put, data)

    async def get(self, key: str) -> bytes:
        path = self.path(key)
        return await asyncio.to_thread(self._get, key, path)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def describe(self) -> str:
        return f"local directory {self.root}"

    def _put(self, data: bytes) -> str:
        key = object_key(data)
        final = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            # Same size is taken as same content (the name is its hash); a different size
            # can only be damage, which the write below repairs.
            if final.stat().st_size == len(data):
                return key
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        except OSError as error:
            raise ObjectStoreError(f"cannot write object {key} to {final}: {error}") from error
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), 0o644)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, final)
            _fsync_dir(final.parent)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(error, OSError):
                raise ObjectStoreError(f"cannot write object {key} to {final}: {error}") from error
            raise
        return key

    def _get(self, key: str, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ObjectStoreError(
                f"object {key} not found in {self.describe()}: no file {path}"
            ) from None
        except OSError as error:
            raise ObjectStoreError(f"cannot read object {key} from {path}: {error}") from error
        return _verified(key, data, str(path))


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: without this a crash can forget a file that was just named."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket (or any S3-compatible store) as `<prefix>sha256/<hex>`.

    Credentials and region come from boto3's usual chain (environment, `AWS_PROFILE`, instance
    role, …). boto3 is imported on first use: it costs a fifth of a second, and most commands
    never touch the store. Note that without `s3:ListBucket` S3 answers 403 instead of 404 for
    a missing object, and that `exists` cannot tell a missing bucket from a missing object
    (HEAD has no error body): `put` and `get` name the missing bucket.
    """

    def __init__(self, bucket: str, endpoint: str | None = None, prefix: str = "reflux/") -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        # "reflux" and "reflux/" mean the same folder to a person; keep keys under it either way.
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = None
        self._client_lock = threading.Lock()

    def object_name(self, key: str) -> str:
        """The name of the object under `key` inside the bucket."""
        return f"{self.prefix}sha256/{_digest(key)}"

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self._put, data)

    async def get(self, key: str) -> bytes:
        name = self.object_name(key)
        return await asyncio.to_thread(self._get, key, name)

    async def exists(self, key: str) -> bool:
        name = self.object_name(key)
        return await asyncio.to_thread(self._exists, key, name)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_name(key)}"

    def describe(self) -> str:
        return f"S3 bucket {self.bucket} at {self.endpoint or 'AWS S3'}"

    def _put(self, data: bytes) -> str:
        key = object_key(data)
        name = self.object_name(key)
        if self._exists(key, name):
            return key
        try:
            self._s3().put_object(Bucket=self.bucket, Key=name, Body=data)
        except Exception as error:
            raise self._translate(error, key) from error
        return key

    def _get(self, key: str, name: str) -> bytes:
        try:
            response = self._s3().get_object(Bucket=self.bucket, Key=name)
            data: bytes = response["Body"].read()
        except Exception as error:
            raise self._translate(error, key) from error
        return _verified(key, data, self.uri(key))

    def _exists(self, key: str, name: str) -> bool:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            self._s3().head_object(Bucket=self.bucket, Key=name)
        except ClientError as error:
            if _error_code(error) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self._translate(error, key) from error
        except Exception as error:
            raise self._translate(error, key) from error
        return True

    def _s3(self) -> Any:
        """The boto3 client, made once: clients are thread-safe, their creation is not."""
        with self._client_lock:
            if self._client is None:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]

                config = Config(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"mode": "standard", "max_attempts": 3},
                    max_pool_connections=32,
                    # S3-compatible stores rarely serve bucket-named subdomains.
                    s3={"addressing_style": "path"} if self.endpoint else None,
                )
                session = boto3.session.Session()
                self._client = session.client("s3", endpoint_url=self.endpoint, config=config)
            return self._client

    def _translate(self, error: Exception, key: str) -> ObjectStoreError:
        """botocore's exceptions as one-line `ObjectStoreError`s; the only place that knows them."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        where = self.endpoint or "AWS S3"
        retryable = False
        if isinstance(error, ClientError):
            code = _error_code(error)
            if code == "NoSuchBucket":
                message = f"S3 bucket {self.bucket!r} does not exist at {where}"
            elif code in {"404", "NoSuchKey", "NotFound"}:
                message = f"object {key} not found in {self.describe()}: no {self.uri(key)}"
            elif code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                message = (
                    f"S3 at {where} denied access to {self.uri(key)} ({code}); "
                    "check the AWS credentials and the bucket policy"
                )
            else:
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                retryable = status >= 500 or code in {"SlowDown", "RequestTimeout"}
                detail = error.response.get("Error", {}).get("Message") or code
                message = f"S3 at {where} failed on {self.uri(key)}: {code}: {detail}"
        elif isinstance(error, NoCredentialsError):
            message = (
                f"no AWS credentials for S3 bucket {self.bucket!r}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        elif isinstance(error, ConnectionError | HTTPClientError):
            retryable = True
            message = f"cannot reach S3 at {where} for bucket {self.bucket!r}: {error}"
        elif isinstance(error, BotoCoreError):
            message = f"S3 at {where} failed on {self.uri(key)}: {error}"
        else:
            message = f"S3 at {where} failed on {self.uri(key)}: {type(error).__name__}: {error}"
        translated = ObjectStoreError(" ".join(message.split()))
        translated.retryable = retryable
        return translated


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def object_store(settings: Settings) -> ObjectStore:
    """The store `settings` name: S3 when a bucket is set, else `<REFLUX_HOME>/objects`."""
    objects = settings.objects
    if objects.bucket:
        return S3ObjectStore(objects.bucket, endpoint=objects.endpoint, prefix=objects.prefix)
    if objects.endpoint:
        raise ConfigError(
            f"REFLUX_S3_ENDPOINT is set ({objects.endpoint}) but REFLUX_S3_BUCKET is not: "
            "set the bucket to store objects in S3, or unset the endpoint to keep them in "
            f"{stack_home(settings) / 'objects'}"
        )
    return LocalObjectStore(stack_home(settings) / "objects")


async def offload(value: Any, store: ObjectStore, limit: int) -> tuple[Any, str | None]:
    """(value, None) when its JSON is smaller than `limit` bytes, else (None, its key)."""
    data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) < limit:
        return value, None
    return None, await store.put(data)


async def fetch(value: Any, ref: str | None, store: ObjectStore) -> Any:
    """The value a message carries, loaded from the store when it came by reference."""
    return value if ref is None else json.loads(await store.get(ref))
