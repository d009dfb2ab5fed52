"""The step result cache: a NATS JetStream key-value bucket keyed by node, version and params.

Why it is shaped like this:

- A key is `<node>.<inputs hash>` (`http.request.3f9a…`), the hash being the traces'
  `inputs_hash`, so cache entries and traces join. The node keeps its dots: every key ends
  in exactly one hash token, so the subject filter `$KV.<bucket>.<node>.*` matches one
  node's entries and nothing else (not `<node>.sub.*`, and no `_`-for-`.` collisions), and
  `clear(node)` is a single purge of the bucket's stream.
- Expiry is decided by the reader, from the `expires_at` written in the entry, so a step's
  `ttl` holds to the moment whatever NATS does. NATS forgets the entry too: each message
  carries a per-message TTL (`Nats-TTL`, whole seconds rounded up; the bucket's stream has
  `allow_msg_ttl`), and the bucket's `max_age` bounds everything.
- Outputs whose JSON reaches the inline limit go to the object store and the entry holds
  the key, as in node messages, because a KV value must fit one NATS message.
- The cache must never fail a step: `get` answers a miss and `put` logs a warning on any
  NATS, object-store or entry trouble. Only `clear`, which a user asked for, raises.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from infra import RefluxError, ServiceError
from reflection.events import inputs_hash
from registry import fetch, offload

if TYPE_CHECKING:
    from registry import ObjectStore

log = logging.getLogger("reflux.cache")

BUCKET = "REFLUX_CACHE"
MAX_TTL = timedelta(days=7)
JS_API = "$JS.API"
ADMIN_TIMEOUT = 10.0
"""Seconds for creating, binding and purging the bucket (not on a step's path)."""
ENVELOPE_BYTES = 4096
"""Room kept in a NATS message for the entry around an inline output."""
STREAM_NAME_IN_USE = 10058
"""JetStream's error code for creating a stream that exists with another configuration."""

_NODE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_TROUBLE = (nats.errors.Error, TimeoutError, OSError, RefluxError, TypeError, ValueError)
"""What a cache read or write may run into; each makes a miss or a skipped write."""


def cache_key(node: str, version: str, params: Any, namespace: str = "default") -> str:
    """The bucket key of a step result: `<node>.<inputs_hash(node, version, params, ns)>`."""
    if not _NODE.fullmatch(node):
        raise ValueError(f"node name {node!r} cannot be a cache key")
    return f"{node}.{inputs_hash(node, version, params, namespace)}"


@dataclass(frozen=True, slots=True)
class CacheHit:
    output: Any
    stored_at: datetime
    expires_at: datetime
    key: str


class CacheEntry(BaseModel):
    """One stored result, as JSON in the bucket."""

    key: str
    node: str
    version: str
    stored_at: float
    """Seconds since the epoch, by the writer's clock (as `expires_at`)."""
    expires_at: float
    output: Any = None
    output_ref: str | None = None
    """Set: the output is this object in the store (and `output` is None)."""


class StepCache:
    """Step results by node, pinned version and resolved params; see the module docstring."""

    def __init__(
        self,
        nc: Client,
        kv: KeyValue,
        store: ObjectStore,
        inline_limit: int,
        *,
        bucket: str,
        max_age: float | None,
        msg_ttl: bool,
        timeout: float,
    ) -> None:
        """Use `StepCache.open`, which makes sure the bucket exists."""
        self.nc = nc
        self.store = store
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.max_age = max_age
        """The bucket's upper bound on any entry's life in seconds (None: unbounded)."""
        self.msg_ttl = msg_ttl
        """Whether the bucket's stream takes per-message TTLs (buckets made elsewhere may not)."""
        self.timeout = timeout
        # An inline output must leave room for the entry around it in one NATS message.
        self.inline_limit = max(min(inline_limit, nc.max_payload - ENVELOPE_BYTES), 1)
        self._kv = kv
        self._js: JetStreamContext = nc.jetstream(timeout=timeout)

    @classmethod
    async def open(
        cls,
        nc: Client,
        store: ObjectStore,
        inline_limit: int,
        *,
        bucket: str = BUCKET,
        max_ttl: timedelta = MAX_TTL,
        timeout: float = 2.0,
    ) -> StepCache:
        """The cache in `bucket`, created (file storage, history 1, max age `max_ttl`) unless
        it exists. Safe to call from several processes at once. `timeout` bounds each `get`
        and `put` round trip to NATS."""
        admin = nc.jetstream(timeout=ADMIN_TIMEOUT)
        stream = f"KV_{bucket}"
        try:
            try:
                info = await admin.stream_info(stream)
            except NotFoundError:
                await _create(admin, bucket, max_ttl)
                info = await admin.stream_info(stream)
            kv = await nc.jetstream(timeout=timeout).key_value(bucket)
        except nats.errors.Error as error:
            raise ServiceError(
                f"cannot open the step cache (NATS key-value bucket {bucket}): {_describe(error)}"
            ) from error
        max_age = info.config.max_age or None
        return cls(
            nc,
            kv,
            store,
            inline_limit,
            bucket=bucket,
            max_age=max_age,
            msg_ttl=bool(info.config.allow_msg_ttl),
            timeout=timeout,
        )

    async def get(
        self, node: str, version: str, params: Any, namespace: str = "default"
    ) -> CacheHit | None:
        """The cached output of `node@version` on `params` in `namespace`, or None (a miss)
        when there is none, it expired, it is unreadable, or NATS or the object store fails."""
        try:
            key = cache_key(node, version, params, namespace)
            try:
                raw = await self._kv.get(key)
            except KeyNotFoundError:
                return None
            entry = await self._entry(key, raw.value, raw.revision)
            if entry is None or time.time() >= entry.expires_at:
                return None
            output = await fetch(entry.output, entry.output_ref, self.store)
        except _TROUBLE as error:
            log.warning("step cache: lookup of %s@%s failed: %s", node, version, _describe(error))
            return None
        return CacheHit(
            output=output,
            stored_at=datetime.fromtimestamp(entry.stored_at, UTC),
            expires_at=datetime.fromtimestamp(entry.expires_at, UTC),
            key=key,
        )

    async def put(
        self,
        node: str,
        version: str,
        params: Any,
        output: Any,
        ttl: float,
        namespace: str = "default",
    ) -> bool:
        """Cache `output` for `ttl` seconds (at most the bucket's max age). True when stored;
        False, with a warning logged, when it could not be; never raises."""
        if ttl <= 0:
            return False
        if self.max_age:
            ttl = min(ttl, self.max_age)
        try:
            key = cache_key(node, version, params, namespace)
            inline, ref = await offload(output, self.store, self.inline_limit)
            now = time.time()
            entry = CacheEntry(
                key=key,
                node=node,
                version=version,
                stored_at=now,
                expires_at=now + ttl,
                output=inline,
                output_ref=ref,
            )
            data = json.dumps(
                entry.model_dump(), separators=(",", ":"), ensure_ascii=False
            ).encode()
            # Nats-TTL takes whole seconds, at least one: rounding up keeps the entry for the
            # reader until its own expires_at says it is gone.
            msg_ttl = max(math.ceil(ttl), 1) if self.msg_ttl else None
            await self._js.publish(self._subject(key), data, stream=self.stream, msg_ttl=msg_ttl)
        except _TROUBLE as error:
            log.warning("step cache: cannot store %s@%s: %s", node, version, _describe(error))
            return False
        return True

    async def clear(self, node: str | None = None) -> int:
        """Remove every entry, or `node`'s only; the number removed. `ServiceError` on failure."""
        request: dict[str, Any] = {}
        if node is not None:
            if not _NODE.fullmatch(node):
                return 0  # no entry can have been stored under a name that is not a key
            request["filter"] = self._subject(f"{node}.*")
        # nats-py's purge_stream drops the server's count of purged messages; ask directly.
        try:
            reply = await self.nc.request(
                f"{JS_API}.STREAM.PURGE.{self.stream}",
                json.dumps(request).encode(),
                timeout=ADMIN_TIMEOUT,
            )
            body = json.loads(reply.data)
        except (nats.errors.Error, TimeoutError, ValueError) as error:
            raise ServiceError(self._clear_failed(node, _describe(error))) from error
        if not body.get("success"):
            problem = body.get("error", {}).get("description") or reply.data.decode()
            raise ServiceError(self._clear_failed(node, problem))
        return int(body.get("purged", 0))

    async def _entry(self, key: str, value: bytes | None, seq: int | None) -> CacheEntry | None:
        """The entry in `value`, or None (and the message purged) when it is not one for `key`."""
        try:
            # json, as `offload`/`fetch` use, so an inline output reads back as a stored one.
            entry = CacheEntry.model_validate(json.loads(value or b""))
            if entry.key == key:
                return entry
        except ValueError:  # pydantic's ValidationError is one too
            pass
        log.warning("step cache: entry %s in bucket %s is corrupt; removing it", key, self.bucket)
        # Only this message and older ones: a good entry written meanwhile stays.
        upto = seq + 1 if seq else None
        await self._js.purge_stream(self.stream, subject=self._subject(key), seq=upto)
        return None

    def _subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    def _clear_failed(self, node: str | None, problem: str) -> str:
        what = f"node {node}'s entries" if node is not None else "all entries"
        return f"cannot clear {what} from the step cache (bucket {self.bucket}): {problem}"


async def _create(js: JetStreamContext, bucket: str, max_ttl: timedelta) -> None:
    config = KeyValueConfig(
        bucket=bucket,
        description="Reflux step results",
        history=1,
        ttl=max_ttl.total_seconds(),
        storage=StorageType.FILE,
        direct=True,  # reads by subject from any replica, without the JetStream API leader
    )
    try:
        # Creating with an identical configuration succeeds even if another process won the
        # race; nats-py gives the stream allow_msg_ttl.
        await js.create_key_value(config)
    except BadRequestError as error:
        # Another process created it with another max age: use theirs.
        if error.err_code != STREAM_NAME_IN_USE:
            raise


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {text}" if text and name not in text else text or name
