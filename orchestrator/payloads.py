"""Large Temporal payloads live in the object store; history keeps a small reference.

Temporal caps a payload at a few MiB and every byte in history is replayed, so a step that
returns a big table would fail or slow every replay. Through the SDK's External Storage,
any payload of `inline_limit` bytes or more (serialized) is put in the object store and
replaced by a reference to its `sha256:` key; decoding fetches it back transparently.

Every client and worker must be built with the same store: a reference written by one
process is only readable by a process whose store holds the object.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from infra import ObjectStoreError
from registry import ObjectStore

T = TypeVar("T")


class ObjectStoreDriver(StorageDriver):
    """A Temporal storage driver over an `ObjectStore`; its claim is `{"key": "sha256:…"}`.

    Content addressing makes a stored payload immutable and deduplicated, so the driver needs
    none of the namespace/workflow key segments the SDK's S3 driver builds.
    """

    def __init__(self, store: ObjectStore) -> None:
        self._objects = store  # not `self.store`: that is the driver's method

    def name(self) -> str:
        return "reflux.objects"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        keys = await _gather([self._objects.put(p.SerializeToString()) for p in payloads])
        return [StorageDriverClaim(claim_data={"key": key}) for key in keys]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        blobs = await _gather([self._objects.get(_claim_key(claim)) for claim in claims])
        return [Payload.FromString(blob) for blob in blobs]


def _claim_key(claim: StorageDriverClaim) -> str:
    key = claim.claim_data.get("key")
    if key is None:
        raise ObjectStoreError(f"reflux.objects claim has no 'key': {dict(claim.claim_data)}")
    return key


async def _gather(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """All at once; the first failure cancels the rest (a TaskGroup would wrap the error)."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def data_converter(store: ObjectStore, inline_limit: int) -> DataConverter:
    """The pydantic data converter, with payloads of `inline_limit` bytes or more in `store`."""
    storage = ExternalStorage(
        drivers=[ObjectStoreDriver(store)], payload_size_threshold=inline_limit
    )
    return dataclasses.replace(pydantic_data_converter, external_storage=storage)


def payload_sizes(history: Any) -> list[int]:
    """The size of every Payload anywhere in a workflow history's events (bytes)."""
    return [p.ByteSize() for event in history.events for p in _payloads(event)]


def _payloads(message: Any) -> Any:
    if isinstance(message, Payload):
        yield message
        return
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        if hasattr(value, "ListFields"):
            yield from _payloads(value)
            continue
        for item in value.values() if hasattr(value, "values") else value:  # map or repeated
            if hasattr(item, "ListFields"):
                yield from _payloads(item)
