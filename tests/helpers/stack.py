"""A real embedded stack for a test session: Temporal, NATS, PostgreSQL, a worker, the
evolution worker and node services, each on its own free ports under its own home, so
parallel sessions never clash."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.database import pool_for
from infra.ports import free_ports
from infra.settings import Settings
from infra.stack import ProcessSpec, Stack, addresses
from orchestrator.plan import RunResult
from registry.nodes import NodeRegistry

CLI = [sys.executable, "-m", "reflux.cli"]
TEST_CATALOG = "tests.support.nodes:catalog"


@dataclass
class RunningStack:
    home: Path
    env: dict[str, str]

    @property
    def settings(self) -> Settings:
        return settings_from(self.env)

    def cli(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )

    def traces(self, run_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """`reflux traces RUN_ID --json` once the sink has stored `count` events of the run."""
        from tests.helpers.waiting import wait_for

        def ask() -> list[dict[str, Any]] | None:
            done = self.cli("traces", run_id, "--json")
            assert done.returncode == 0, done.stderr
            events: list[dict[str, Any]] = json.loads(done.stdout)
            return events if len(events) >= count else None

        found = wait_for(ask, timeout=timeout, every=0.3, what="the run's traces in ClickHouse")
        assert found is not None
        return found

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """A foreground `reflux` process (e.g. an extra node replica) the test stops itself."""
        log = open(self.home / f"spawn-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        return subprocess.Popen([*CLI, *args], env=self.env, stdout=log, stderr=log, text=True)

    def write(self, name: str, text: str) -> Path:
        path = self.home / "flows" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def run(
        self, text: str, inputs: dict[str, Any] | None = None, timeout: float = 120
    ) -> RunResult:
        """Run a workflow through `reflux run --json`, as a user would."""
        path = self.write(f"flow-{time.monotonic_ns()}.yaml", text)
        args = ["run", str(path), "--json"]
        if inputs is not None:
            args += ["--input", json.dumps(inputs)]
        done = self.cli(*args, timeout=timeout)
        if done.returncode not in (0, 1) or not done.stdout.strip():
            raise AssertionError(f"reflux run exited {done.returncode}: {done.stderr}{done.stdout}")
        body = json.loads(done.stdout)
        return RunResult.model_validate(
            {
                **body,
                "workflow": "",
                "error": body.get("error"),
                "failed_step": (body.get("error") or {}).get("step"),
            }
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['REFLUX_API_PORT']}"

    def up(self, echo: Callable[[str], None] = lambda _: None) -> None:
        asyncio.run(Stack(self.settings).up(echo, extra_processes=background(self.home, self.env)))
        asyncio.run(promote_test_nodes(self.settings))


async def promote_test_nodes(settings: Settings) -> None:
    """The test catalog's nodes register as drafts, as any new node would; tests use them as
    released nodes, so move every draft to production the way a reviewer would."""
    async with pool_for(settings) as pool:
        registry = NodeRegistry(pool, "tests")
        for node in await registry.nodes():
            for v in node.versions:
                if v.status == "draft":
                    await registry.promote(v.name, v.version, "staging")
                    await registry.promote(v.name, v.version, "production")


def settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def background(home: Path, env: dict[str, str]) -> list[ProcessSpec]:
    groups = {
        "worker": ["worker"],
        "evolution": ["evolution", "worker"],
        "sink": ["reflection", "sink"],
        "nodes-core": ["nodes", "serve", "--groups", "core"],
        "nodes-http": ["nodes", "serve", "--groups", "http"],
        "nodes-code": ["nodes", "serve", "--groups", "code"],
        "api": ["api"],
        "nodes-testing": ["nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "testing"],
        "nodes-versions": ["nodes", "serve", "--catalog", TEST_CATALOG, "--groups", "versions"],
    }
    return [
        ProcessSpec(
            name=name, argv=[*CLI, *argv], env=env, ready_file=home / "run" / f"{name}.ready"
        )
        for name, argv in groups.items()
    ]


def start_test_stack(home: Path, **settings: str) -> RunningStack:
    """Start a stack under `home` on free ports; `settings` are extra REFLUX_… variables
    (e.g. REFLUX_DATABASE_URL to use an existing database instead of starting one)."""
    temporal, nats_port, monitor, pg, api = free_ports(5)
    env = {
        **os.environ,
        "REFLUX_HOME": str(home),
        "REFLUX_TEMPORAL_PORT": str(temporal),
        "REFLUX_NATS_PORT": str(nats_port),
        "REFLUX_NATS_MONITOR_PORT": str(monitor),
        "REFLUX_DATABASE_PORT": str(pg),
        "REFLUX_API_PORT": str(api),
        "REFLUX_HTTP_ALLOW_NETWORKS": "127.0.0.1/32",
        "REFLUX_WEBHOOK_KEY_TEST_HOOK": "test-hook-secret",
        "REFLUX_SECRET_API_TOKEN": "test-api-token",
        # proposals' lifecycles look at their runs every second; no scheduled Critic scans
        "REFLUX_EVOLUTION_POLL": "1",
        "REFLUX_CRITIC_EVERY": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    for key in ("REFLUX_TEMPORAL_ADDRESS", "REFLUX_NATS_URL", "REFLUX_DATABASE_URL"):
        env.pop(key, None)
    env.update(settings)
    stack = RunningStack(home=home, env=env)
    try:
        stack.up()
    except BaseException:  # what did start must not outlive the session
        stop_test_stack(stack)
        raise
    return stack


def stop_test_stack(stack: RunningStack) -> None:
    asyncio.run(Stack(stack.settings).down(lambda _: None))


def nats_url(stack: RunningStack) -> str:
    return addresses(stack.settings).nats
