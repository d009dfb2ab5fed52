"""Event triggers do not take each other's messages: every trigger gets every message on its
subject (two workflows on overlapping subjects each start a run per message), while replicas
of the worker still share each trigger's messages (a message starts one run per trigger)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from infra.database import connect
from infra.stack import addresses
from tests.helpers.stack import CLI, RunningStack, nats_url
from tests.helpers.waiting import eventually, eventually_async
from tests.reflux.api.conftest import ORDER_FLOW, auth
from tests.reflux.api.test_event_triggers import request

MESSAGES = 20


def event_flow(workflow_id: str, subject: str, extra_input: str = "") -> str:
    source = ORDER_FLOW.format(id=workflow_id)
    if extra_input:  # tells this workflow's answers apart from another's
        order = "  order: {type: integer, required: true}\n"
        source = source.replace(order, order + f"  {extra_input}: {{type: string, default: x}}\n")
    return source + f'  - type: event\n    id: on-order\n    subject: "{subject}"\n'


def push(api, tokens, source: str) -> None:
    pushed = api.post("/workflows", json={"source": source}, headers=auth(tokens["author"]))
    assert pushed.status_code == 201, pushed.text


def ledger(stack: RunningStack, workflow_id: str) -> list[str]:
    """The ids of the workflow's runs in the ledger."""

    async def ids() -> list[str]:
        conn = await connect(addresses(stack.settings).database)
        try:
            rows = await conn.fetch("SELECT id FROM runs WHERE workflow_id = $1", workflow_id)
            return [row["id"] for row in rows]
        finally:
            await conn.close()

    return asyncio.run(ids())


async def answered_by_both(stack: RunningStack, subject: str, tell_apart: str) -> None:
    """Until a message on `subject` has been answered by both workflows' triggers: a probe
    starts nothing (an unknown input), and only the second workflow declares `tell_apart`."""
    nc = await nats.connect(nats_url(stack))
    try:
        errors: list[str] = []  # every reply to every probe, as it arrives

        async def collect(reply: Msg) -> None:
            errors.append(json.loads(reply.data)["error"])

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=collect)

        async def both() -> bool:
            for error in errors:
                assert "unknown input 'probe'" in error, error
            if {tell_apart in error for error in errors} == {True, False}:
                return True
            await nc.publish(subject, b'{"probe": 1}', reply=inbox)
            await nc.flush()
            return False

        await eventually_async(
            both, timeout=30, every=0.2, what=f"both triggers answering on {subject}"
        )
    finally:
        await nc.close()


async def publish(stack: RunningStack, subject: str, count: int) -> None:
    nc = await nats.connect(nats_url(stack))
    try:
        for order in range(count):
            await nc.publish(subject, json.dumps({"order": order}).encode())
        await nc.flush()
    finally:
        await nc.close()


def test_overlapping_subjects_each_get_every_message(stack: RunningStack, api, tokens):
    tag = uuid.uuid4().hex[:8]
    exact, wide = f"exact-{tag}", f"wide-{tag}"
    push(api, tokens, event_flow(exact, f"iso.{tag}.orders.created"))
    push(api, tokens, event_flow(wide, f"iso.{tag}.orders.>", extra_input="note"))
    asyncio.run(answered_by_both(stack, f"iso.{tag}.orders.created", "note"))

    asyncio.run(publish(stack, f"iso.{tag}.orders.created", MESSAGES))

    def every_message_started_both() -> bool:
        counts = (len(ledger(stack, exact)), len(ledger(stack, wide)))
        assert counts == (MESSAGES, MESSAGES), f"runs (exact, wide): {counts}"
        return True

    eventually(every_message_started_both, timeout=60)


@pytest.fixture
def replica(stack: RunningStack, tmp_path: Path):
    """A second worker (its own event listener) that the test starts and stops itself."""
    ready = tmp_path / "replica.ready"
    log = (tmp_path / "replica.log").open("w")
    process = subprocess.Popen(
        [*CLI, "worker"], env={**stack.env, "REFLUX_READY_FILE": str(ready)},
        stdout=log, stderr=log, text=True,
    )  # fmt: skip
    try:
        eventually(lambda: ready.exists() or process.poll() is not None, timeout=60)
        assert process.poll() is None, (tmp_path / "replica.log").read_text()
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture
def replicated(stack: RunningStack, api, tokens, replica) -> tuple[str, str]:
    """A workflow with one event trigger, pushed while both workers run: both reload their
    subscriptions and listen on its subject."""
    tag = uuid.uuid4().hex[:8]
    workflow_id, subject = f"replicated-{tag}", f"iso.{tag}.replicated"
    push(api, tokens, event_flow(workflow_id, subject))
    return workflow_id, subject


def test_worker_replicas_share_a_triggers_messages(stack: RunningStack, replicated):
    workflow_id, subject = replicated
    started = [request(stack, subject, json.dumps({"order": n}).encode()) for n in range(10)]
    run_ids = {answer["run_id"] for answer in started}
    assert len(run_ids) == 10
    # each message started one run, in one replica: a second run of any is in the ledger
    eventually(lambda: len(ledger(stack, workflow_id)) >= 10, timeout=60)
    assert set(ledger(stack, workflow_id)) == run_ids
