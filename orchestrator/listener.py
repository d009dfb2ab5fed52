"""Event triggers: the worker listens on every stored workflow's `event` trigger subjects
and starts a run of the latest version per message (the message's JSON object is the
inputs; started by `event:<trigger>`). A push publishes `reflux.triggers.changed`, and
every listener reloads its subscriptions.

Why a queue group per trigger (`reflux-event:<namespace>:<workflow>:<trigger>`): NATS gives
each message to one member of a queue group. Worker replicas must share a trigger's
messages (one run per message), so each trigger's subscriptions are in a group; but two
triggers in one group would split the messages on the subjects they share (`orders.created`
and `orders.>`), and each would miss some. In a group of its own, every trigger gets every
message on its subject, once across the replicas. (`:` is in no id, so no two triggers'
names can meet.)

Messages that are not a JSON object, nest deeper than REFLUX_INPUT_MAX_DEPTH, are larger
than REFLUX_INPUT_MAX_BYTES or do not fit the workflow's inputs start nothing; they are
logged with the reason (and answered with it, when the sender asked for a reply).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from temporalio.client import Client

from infra import RefluxError, Settings, loads
from orchestrator.spec import EventTrigger

__all__ = ["CHANGED", "EventListener", "announce_change", "queue_group"]

log = logging.getLogger("reflux.triggers")

CHANGED = "reflux.triggers.changed"


def queue_group(namespace: str, workflow_id: str, trigger_id: str) -> str:
    """The NATS queue group of one event trigger: shared by the replicas, by nobody else."""
    return f"reflux-event:{namespace}:{workflow_id}:{trigger_id}"


async def announce_change(nc: Nats) -> None:
    """Tell every listener that triggers may have changed."""
    await nc.publish(CHANGED, b"")
    await nc.flush()


class EventListener:
    def __init__(self, nc: Nats, pool: asyncpg.Pool, client: Client, settings: Settings) -> None:
        self.nc = nc
        self.pool = pool
        self.client = client
        self.settings = settings
        self._subscriptions: list[Subscription] = []
        self._lock = asyncio.Lock()
        self._control: Subscription | None = None
        self._events: dict[tuple[str, int], list[tuple[str, str]]] = {}
        """(workflow id, version) -> its event triggers (id, subject): what reloads reuse."""

    async def start(self) -> None:
        self._control = await self.nc.subscribe(CHANGED, cb=self._changed)
        await self.reload()

    async def stop(self) -> None:
        for sub in [*self._subscriptions, *([self._control] if self._control else [])]:
            await sub.unsubscribe()
        self._subscriptions.clear()

    async def _changed(self, _: Msg) -> None:
        await self.reload()

    async def reload(self) -> None:
        from orchestrator.validate import validate_text
        from registry import WorkflowRegistry

        async with self._lock:
            for sub in self._subscriptions:
                await sub.unsubscribe()
            self._subscriptions.clear()
            registry = WorkflowRegistry(self.pool, "event-triggers")
            known: dict[tuple[str, int], list[tuple[str, str]]] = {}
            for workflow in await registry.workflows():
                ref = (workflow.id, workflow.live_version)  # a candidate's triggers wait
                if ref not in self._events:  # a version is parsed once, off the event loop
                    stored = await registry.get(workflow.id, workflow.live_version)
                    spec, problems = await asyncio.to_thread(
                        validate_text, stored.source, stored.ref
                    )
                    if spec is None:  # e.g. stored before a rule it breaks: it listens to nothing
                        log.warning("event triggers of %s not loaded: %s", stored.ref, problems[0])
                    self._events[ref] = [
                        (t.id, t.subject)
                        for t in (spec.triggers if spec else [])
                        if isinstance(t, EventTrigger)
                    ]
                known[ref] = self._events[ref]
                for trigger_id, subject in known[ref]:
                    handler = self._handler(workflow.id, trigger_id)
                    queue = queue_group(workflow.namespace, workflow.id, trigger_id)
                    sub = await self.nc.subscribe(subject, queue=queue, cb=handler)
                    self._subscriptions.append(sub)
            self._events = known
            log.info("event triggers: %d subscriptions", len(self._subscriptions))

    def _handler(self, workflow_id: str, trigger_id: str) -> Any:
        async def started(msg: Msg) -> None:
            try:
                run_id = await self._start(workflow_id, trigger_id, msg.data)
                answer = {"run_id": run_id}
            except (RefluxError, ValueError) as exc:
                log.warning("event %s on %s/%s started nothing: %s",
                            msg.subject, workflow_id, trigger_id, exc)  # fmt: skip
                answer = {"error": str(exc).splitlines()[0]}
            if msg.reply:
                await msg.respond(json.dumps(answer).encode())

        return started

    async def _start(self, workflow_id: str, trigger_id: str, data: bytes) -> str:
        from orchestrator.runs import launch

        limits = self.settings.limits
        inputs = loads(data or b"{}", limits.input_max_depth, limits.input_max_bytes, "the message")
        if not isinstance(inputs, dict):
            raise ValueError("the message must be a JSON object: the run's inputs")
        launched = await launch(self.client, self.pool, self.settings, workflow_id, None, inputs,
                                actor=f"event:{trigger_id}")  # fmt: skip
        return launched.handle.id
