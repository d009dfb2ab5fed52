"""Node groups as separate services: replicas share a queue group; losing one loses no step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import nats
import pytest

from nodes.discovery import discover
from nodes.protocol import NodeRequest, exact_subject
from tests.helpers.stack import CLI, TEST_CATALOG, RunningStack, nats_url, promote_test_nodes
from tests.helpers.waiting import eventually_async, wait_for

pytestmark = pytest.mark.timeout(240)


def instances(stack: RunningStack, name: str) -> int:
    async def ask() -> int:
        nc = await nats.connect(nats_url(stack))
        try:
            return sum(len(n.instances) for n in await discover(nc) if n.name == name)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_killing_one_of_two_replicas_loses_no_step(stack: RunningStack):
    replicas = [
        stack.spawn("nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "replicas")
        for _ in range(2)
    ]
    try:
        wait_for(lambda: instances(stack, "test.work") == 2, what="two replicas")
        asyncio.run(promote_test_nodes(stack.settings))  # they registered as drafts
        flow = stack.write(
            "replicas.yaml",
            """
            id: replicas
            inputs:
              items: {type: array}
            steps:
              - id: work
                node: test.work@1
                for_each: "{{ inputs.items }}"
                concurrency: 20
                timeout: 3s
                retry: {max_attempts: 5, initial_interval: 1s}
                with: {n: "{{ item }}", seconds: 0.1}
            """,
        )
        run = subprocess.Popen(
            [*CLI, "run", str(flow), "--json", "--input", json.dumps({"items": list(range(200))})],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill a replica while steps are in flight on it.
        wait_for(lambda: requests_received(stack) >= 40, timeout=60, what="steps in flight")
        replicas[0].send_signal(signal.SIGKILL)
        out, err = run.communicate(timeout=180)
        assert run.returncode == 0, err
        result = json.loads(out)
        outputs = result["steps"]["work"]["output"]
        assert [o["n"] for o in outputs] == list(range(200))
        pids = {o["pid"] for o in outputs}
        assert pids == {replicas[0].pid, replicas[1].pid}  # both shared the load
        assert os.getpid() not in pids
    finally:
        for proc in replicas:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)


def requests_received(stack: RunningStack, node: str = "test.work") -> int:
    """Requests the replicas serving `node` have received so far (their $SRV.STATS count a
    request when it arrives, before its handler runs)."""

    async def ask() -> int:
        nc = await nats.connect(nats_url(stack))
        try:
            count = 0
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.STATS", b"", reply=inbox)
            try:
                while True:  # every replica answers once; the first silence ends the list
                    msg = await sub.next_msg(timeout=0.2)
                    stats = json.loads(msg.data)
                    if stats.get("metadata", {}).get("reflux.node") == node:
                        count += sum(e["num_requests"] for e in stats["endpoints"])
            except nats.errors.TimeoutError:
                pass
            return count
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_node_groups_run_in_their_own_processes(stack: RunningStack):
    result = stack.run(
        """
        id: where
        steps:
          - {id: s, node: test.sleep@1, with: {seconds: 0}}
        """
    )
    assert result.status == "completed"
    worker_pids = {
        r["pid"]
        for r in json.loads((stack.home / "stack.json").read_text())["processes"]
        if r["name"] == "worker"
    }
    pid = result.steps["s"].output["pid"]
    assert pid not in worker_pids and pid != os.getpid()


def test_sigterm_drains_requests_in_flight(stack: RunningStack):
    replica = stack.spawn("nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "replicas")
    try:
        wait_for(lambda: instances(stack, "test.work") == 1, what="one replica")

        async def call_then_terminate() -> dict:
            nc = await nats.connect(nats_url(stack))
            try:
                request = NodeRequest(params={"seconds": 2.0, "n": 7}).model_dump_json().encode()
                pending = asyncio.ensure_future(
                    nc.request(exact_subject("test.work", "1.0.0"), request, timeout=10)
                )
                # The replica has the request (its handler sleeps 2 s) before it is stopped.
                await eventually_async(
                    lambda: asyncio.to_thread(requests_received, stack),
                    timeout=10,
                    what="the replica to receive the request",
                )
                assert not pending.done()
                replica.send_signal(signal.SIGTERM)
                return json.loads((await pending).data)
            finally:
                await nc.close()

        reply = asyncio.run(call_then_terminate())
        assert reply["error"] is None
        assert reply["output"] == {"n": 7, "pid": replica.pid}
        assert replica.wait(timeout=30) == 0
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait()


def test_malformed_request_gets_a_structured_error(stack: RunningStack):
    async def call() -> dict:
        nc = await nats.connect(nats_url(stack))
        try:
            msg = await nc.request(exact_subject("test.echo", "1.0.0"), b"{not json", timeout=5)
            return json.loads(msg.data)
        finally:
            await nc.close()

    reply = asyncio.run(call())
    assert reply["error"]["class"] == "ValidationError"
    assert reply["error"]["retryable"] is False
