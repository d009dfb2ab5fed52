"""The node service: serves a set of node groups on NATS.

Each node version gets its own `nats.micro` service (discoverable with `$SRV.INFO`, its
manifest in metadata) with two endpoints in queue groups: the major subject
(`reflux.node.<name>.v1`) and the exact one (`reflux.node.<name>.v1.2.3`), so replicas
share load and majors coexist.

nats-py runs a subscription's callback to completion before the next message, so the
endpoint handler only starts a task; a semaphore bounds the work in flight. On SIGTERM
the service stops taking requests, finishes those in flight, then closes.

Secrets: `nodes.secrets` swaps values into the params a node marks as secret-bearing, from
the run's namespace; `infra.redaction.Masker` then masks them in the output, the error and
the log lines of that call.

Before serving, the service registers its node versions in the registry: the built-in
library's as production, any other's as drafts. A version whose manifest differs from the
one registered under the same version is refused, and the service does not start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any

import nats
import pydantic
from nats.aio.client import Client
from nats.micro import Request, Service, add_service
from nats.micro.service import EndpointConfig

from infra import (
    Masker,
    NodeError,
    ObjectStoreError,
    SecretError,
    Settings,
    ValidationError,
    environment_secret,
    redact,
)
from nodes.protocol import (
    MANIFEST_KEY,
    NodeReply,
    NodeRequest,
    WireError,
    exact_subject,
    major_subject,
)
from nodes.sdk import READ_ONLY, CallRecorder, NodeContext, NodeDefinition, NodeGroup, call_effect
from nodes.secrets import SecretResolver
from registry import ObjectStore, fetch, object_store, offload

log = logging.getLogger("reflux.nodes")


def micro_name(node: str) -> str:
    # nats.micro names allow only [A-Za-z0-9_-].
    return "reflux-" + node.replace(".", "_")


async def _environment_only(namespace: str, name: str) -> str | None:
    return environment_secret("secret", namespace, name)


async def call_handler(
    node: NodeDefinition[Any, Any],
    request: NodeRequest,
    settings: Settings,
    secrets: SecretResolver | None = None,
) -> NodeReply:
    """Run one request through a node's handler; every failure becomes a structured error.
    Secret values it resolved are masked in whatever the reply carries. What the handler
    reported (`NodeContext.metric`, `.cost`) is in the reply, also when it then failed."""
    reply = NodeReply(node=node.name, version=node.version)
    mask = Masker({})
    recorder = CallRecorder()
    try:
        resolver = secrets or SecretResolver(_environment_only)
        raw, resolved = await resolver.resolve(
            request.params,
            namespace=request.identity.namespace,
            secret_params=node.secret_params,
            allowed=request.secrets,
            node=node.ref,
            nonce=request.secret_nonce,
        )
        mask = Masker(resolved)
        shadow = request.identity.labels.get("shadow") == "true"
        if shadow and call_effect(node.effects, node.effects_when, raw) not in READ_ONLY:
            # the engine never sends one: a second lock on the door, in another process
            raise NodeError(f"{node.ref}: a shadow run may not make a write call")
        try:
            params = node.params.model_validate(raw)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise ValidationError(  # pydantic's `input` would echo the value: leave it out
                f"{node.ref}: {where}: {first['msg']}",
                details={"errors": [_error_entry(e) for e in exc.errors()[:20]]},
            ) from None
        ctx = NodeContext(
            identity=request.identity,
            timeout=request.timeout,
            settings=settings,
            secrets=tuple(resolved.values()),
            recorder=recorder,
        )
        result = await node.handler(params, ctx)
        reply.output = mask(node.output.model_validate(result).model_dump(mode="json"))
    except SecretError as exc:  # the store is unreachable or a key is wrong: retry may help
        reply.error = _wire(NodeError(str(exc), retryable=True, error_class=exc.code), mask)
    except NodeError as exc:
        reply.error = _wire(exc, mask)
    except Exception as exc:  # a bug in a handler: report it, keep serving
        log.error("node %s failed: %s", node.ref, mask.text(traceback.format_exc()))
        name = type(exc).__name__
        reply.error = _wire(NodeError(f"{name}: {exc}", retryable=False, error_class=name), mask)
    reply.metrics, reply.cost_tokens = dict(recorder.metrics), recorder.tokens
    return reply


def _wire(error: NodeError, mask: Masker) -> WireError:
    """The error as sent: secret values masked, sensitive keys of its details redacted."""
    wire = error.to_wire()
    wire["message"] = mask.text(str(wire["message"]))
    wire["details"] = redact(mask(wire["details"]))
    return WireError.model_validate(wire)


def _error_entry(error: Any) -> dict[str, Any]:
    return {"loc": [str(p) for p in error["loc"]], "msg": error["msg"], "type": error["type"]}


class NodeService:
    """Serves node groups on one NATS connection until stopped."""

    def __init__(
        self, groups: list[NodeGroup], settings: Settings, *, builtin: bool = False
    ) -> None:
        self.groups = groups
        self.settings = settings
        self.builtin = builtin
        self.store: ObjectStore = object_store(settings)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self._nc: Client | None = None
        self._services: list[Service] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.nodes.max_concurrency)
        self.secrets = SecretResolver(self._secret_value, settings.secrets.cache_ttl)
        self._secret_store: Any = None

    @property
    def nodes(self) -> list[NodeDefinition[Any, Any]]:
        return [node for group in self.groups for node in group.nodes]

    async def _secret_value(self, namespace: str, name: str) -> str | None:
        """From the secret store (its pool opened on first use), else the environment."""
        if self._secret_store is None:
            from infra import create_pool, database_url, secrets_key
            from registry import SecretStore

            try:
                key = secrets_key(self.settings)
            except SecretError:  # no key here: only the environment's secrets resolve
                key = None
            pool = await create_pool(database_url(self.settings), min_size=0, max_size=2)
            self._secret_store = SecretStore(pool, key)
        value: str | None = await self._secret_store.value(namespace, name)
        return value

    async def register(self) -> None:
        """Record this service's node versions in the registry (idempotent)."""
        from infra import create_pool, database_url
        from registry import NodeRegistry

        pool = await create_pool(database_url(self.settings), min_size=1, max_size=1)
        try:
            registry = NodeRegistry(pool, self.settings.user)
            done = await registry.register(
                [n.manifest() for n in self.nodes],
                status="production" if self.builtin else "draft",
            )
        finally:
            await pool.close()
        for item in done:
            if item.new:
                log.info("registered %s@%s as %s", item.name, item.version, item.status)

    async def start(self, nats_url: str) -> None:
        await self.register()
        self._nc = await nats.connect(
            nats_url,
            name=f"reflux-nodes-{','.join(g.name for g in self.groups)}-{os.getpid()}",
            error_cb=_log_nats_error,
            max_reconnect_attempts=-1,
        )
        for group in self.groups:
            for node in group.nodes:
                await self._serve(group, node)

    async def _serve(self, group: NodeGroup, node: NodeDefinition[Any, Any]) -> None:
        assert self._nc is not None
        service = await add_service(
            self._nc,
            name=micro_name(node.name),
            version=node.version,
            description=node.description[:200],
            metadata={
                "reflux.node": node.name,
                "reflux.group": group.name,
                MANIFEST_KEY: json.dumps(node.manifest(), separators=(",", ":")),
            },
        )

        async def on_request(request: Request) -> None:
            task = asyncio.create_task(self._handle(node, request))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        for endpoint, subject in (
            ("major", major_subject(node.name, node.major)),
            ("exact", exact_subject(node.name, node.version)),
        ):
            await service.add_endpoint(
                EndpointConfig(
                    name=endpoint, subject=subject, queue_group=subject, handler=on_request
                )
            )
        self._services.append(service)

    async def _handle(self, node: NodeDefinition[Any, Any], request: Request) -> None:
        async with self._slots:
            try:
                call = NodeRequest.model_validate_json(request.data)
            except pydantic.ValidationError as exc:
                reply = NodeReply(node=node.name, version=node.version)
                reply.error = _wire(
                    ValidationError(f"malformed request to {node.ref}: {exc.errors()[0]['msg']}"),
                    Masker({}),
                )
            else:
                reply = await self._call(node, call)
            reply.replica = self.replica
            try:
                await request.respond(reply.model_dump_json(by_alias=True).encode())
            except Exception:  # the caller is gone or the connection closed: nothing to do
                log.warning("could not reply to a %s request", node.ref)

    async def _call(self, node: NodeDefinition[Any, Any], call: NodeRequest) -> NodeReply:
        """`call_handler` with large params and outputs moved through the object store."""
        limit = self.settings.inline_limit
        reply = NodeReply(node=node.name, version=node.version)
        try:
            call.params = await fetch(call.params, call.params_ref, self.store)
            reply = await call_handler(node, call, self.settings, self.secrets)
            if reply.error is None:
                reply.output, reply.output_ref = await offload(reply.output, self.store, limit)
        except ObjectStoreError as exc:  # what the handler reported stays in the reply
            reply.output, reply.output_ref = None, None
            reply.error = _wire(
                NodeError(str(exc), retryable=True, error_class=exc.code), Masker({})
            )
        return reply

    async def drain(self, grace: float = 30.0) -> None:
        """Stop taking requests, finish the ones in flight, then close the connection."""
        # nats.micro's stop() unsubscribes endpoints, dropping requests already delivered to
        # us; drain them ourselves first, then let stop() handle the $SRV subscriptions.
        for service in self._services:
            for endpoint in service._endpoints:
                if endpoint._subscription is not None:
                    await endpoint._subscription.drain()
            service._endpoints = []
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
        for service in self._services:
            await service.stop()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        if self._secret_store is not None:
            await self._secret_store.pool.close()

    async def serve_forever(
        self, nats_url: str, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until SIGTERM/SIGINT, then drain."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start(nats_url)
        if on_ready is not None:
            on_ready()
        await stop.wait()
        await self.drain()


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)
