"""What the review-loop tests share: an evolution worker of their own (its own task queue,
fast looks, a short watch), workflows pushed and run on the session's stack, the Critic's
traces waited for, and proposals driven through the evolution face as the front doors do.

The evolution worker is a real `reflux evolution worker` process, so a test can kill it
mid-validation and start it again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import textwrap
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from temporalio.client import Client

from infra.settings import Settings
from tests.helpers.stack import CLI, RunningStack, settings_from

WORKER_SETTINGS = {
    "REFLUX_EVOLUTION_POLL": "0.5",
    "REFLUX_EVOLUTION_SAMPLES": "30",
    "REFLUX_EVOLUTION_WATCH_RUNS": "20",
    "REFLUX_EVOLUTION_CANARY_PERCENT": "50",
    "REFLUX_CRITIC_EVERY": "0",
}


@dataclass
class EvolutionWorker:
    """`reflux evolution worker` on a task queue of its own, with `WORKER_SETTINGS`."""

    stack: RunningStack
    queue: str = field(default_factory=lambda: f"evolution-test-{uuid.uuid4().hex[:8]}")
    extra: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.stack.env,
            **WORKER_SETTINGS,
            "REFLUX_EVOLUTION_TASK_QUEUE": self.queue,
            **self.extra,
        }

    @property
    def settings(self) -> Settings:
        return settings_from(self.env)

    def start(self, timeout: float = 60) -> None:
        ready = self.stack.home / f"evolution-{self.queue}-{time.monotonic_ns()}.ready"
        log = open(self.stack.home / f"evolution-{self.queue}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*CLI, "evolution", "worker"],
            env={**self.env, "REFLUX_READY_FILE": str(ready)},
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the evolution worker did not start (see {log.name})")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def flow(workflow_id: str, url: str, *, attempts: int = 1, method: str = "GET") -> str:
    """A two-step workflow calling `url`, with a comment the YAML round trip must keep."""
    return textwrap.dedent(
        f"""\
        id: {workflow_id}
        inputs:
          order: {{type: integer, default: 1}}
        steps:
          # the upstream is busy now and then
          - id: fetch
            node: http.request@1
            with:
              url: "{url}?order={{{{ inputs.order }}}}"
              method: {method}
            retry: {{max_attempts: {attempts}, initial_interval: 1s, max_interval: 1s}}
          - id: total
            node: core.transform@1
            with:
              value: "{{{{ steps.fetch.output.status }}}}"
        """
    )


async def push(pool: asyncpg.Pool, source: str) -> int:
    from orchestrator import validate_text
    from registry import NodeRegistry, WorkflowRegistry

    catalog = await NodeRegistry(pool, "tests").catalog()
    spec, problems = validate_text(source, "test.yaml", catalog)
    assert spec is not None, problems
    pushed = await WorkflowRegistry(pool, "tests").push(spec.definition(source))
    return pushed.version.version


async def run_many(
    client: Client, pool: asyncpg.Pool, settings: Settings, workflow_id: str, count: int,
    at_once: int = 8,
) -> list[Any]:  # fmt: skip
    """`count` plain live runs (so a workflow rollout may take some), `at_once` at a time;
    their results."""
    from orchestrator import launch, wait_run

    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> Any:
        async with gate:
            started = await launch(client, pool, settings, workflow_id, inputs={"order": i})
            return await wait_run(started.handle)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def traced(settings: Settings, workflow_id: str, calls: int, timeout: float = 60) -> None:
    """Wait until ClickHouse holds at least `calls` ended calls of the workflow's `fetch`."""
    from reflection import query

    sql = (
        "SELECT count() FROM traces WHERE workflow_id = {w:String} AND step_id = 'fetch'"
        " AND status != 'skipped'"
    )
    deadline = time.monotonic() + timeout
    while True:
        found = (await query(settings, sql, {"w": workflow_id})).rows[0][0]
        if found >= calls or time.monotonic() > deadline:
            assert found >= calls, f"only {found} of {calls} traces of {workflow_id} arrived"
            return
        await asyncio.sleep(0.3)


def failure_rate(results: Sequence[Any]) -> float:
    return sum(r.status != "completed" for r in results) / max(len(results), 1)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
