"""Node groups used only by the tests, served by real `reflux nodes serve --catalog` processes.

Handlers that need to be observed from a test (how often they ran, when, in which process)
write to files under a directory the test passes in params.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from infra.errors import NodeError
from nodes.sdk import NodeCatalog, NodeContext, NodeGroup

testing = NodeGroup("testing", "nodes for the engine tests")
versions = NodeGroup("versions", "two majors of one node")


def record(directory: str, event: dict[str, Any]) -> None:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\n")


def events(directory: str | Path) -> list[dict[str, Any]]:
    path = Path(directory) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class SleepParams(BaseModel):
    seconds: float = 0.0
    label: str = ""
    record_dir: str = ""
    token: str = ""
    """Unused; it may carry secret() (tests of caching steps that read one)."""


class SleepOutput(BaseModel):
    label: str
    pid: int
    started: float
    finished: float


@testing.node(
    "test.sleep", "1.0.0", params=SleepParams, output=SleepOutput, secret_params={"token": "value"}
)
async def sleep(params: SleepParams, ctx: NodeContext) -> SleepOutput:
    """Sleep, then say when and where it ran."""
    started = time.time()
    await asyncio.sleep(params.seconds)
    out = SleepOutput(label=params.label, pid=os.getpid(), started=started, finished=time.time())
    if params.record_dir:
        record(
            params.record_dir,
            {"step": ctx.step_id, "key": ctx.idempotency_key, **out.model_dump()},
        )
    return out


class FlakyParams(BaseModel):
    record_dir: str
    failures: int = 2
    error_class: str = "FlakyError"
    retryable: bool = True


class FlakyOutput(BaseModel):
    calls: int


@testing.node("test.flaky", "1.0.0", params=FlakyParams, output=FlakyOutput)
async def flaky(params: FlakyParams, ctx: NodeContext) -> FlakyOutput:
    """Fail the first `failures` calls (counted in record_dir), then succeed."""
    record(params.record_dir, {"step": ctx.step_id, "attempt": ctx.attempt, "pid": os.getpid()})
    calls = len(events(params.record_dir))
    if calls <= params.failures:
        raise NodeError(
            f"failing on purpose, call {calls}",
            retryable=params.retryable,
            error_class=params.error_class,
        )
    return FlakyOutput(calls=calls)


class EchoParams(BaseModel):
    value: Any = None


class EchoOutput(BaseModel):
    value: Any = None
    version: str


def echo_node(version: str) -> None:
    @versions.node("test.echo", version, params=EchoParams, output=EchoOutput)
    async def echo(params: EchoParams, ctx: NodeContext) -> EchoOutput:
        """Return the value and the version that answered."""
        return EchoOutput(value=params.value, version=version)


for _v in ("1.0.0", "1.1.0", "2.0.0"):
    echo_node(_v)


class BlobParams(BaseModel):
    size: int
    char: str = "x"


class BlobOutput(BaseModel):
    data: str
    status: str = "made"


@testing.node("test.blob", "1.0.0", params=BlobParams, output=BlobOutput)
async def blob(params: BlobParams, ctx: NodeContext) -> BlobOutput:
    """A string of `size` characters: a large output."""
    return BlobOutput(data=params.char * params.size)


class DigestParams(BaseModel):
    data: str


class DigestOutput(BaseModel):
    length: int
    sha256: str


@testing.node("test.digest", "1.0.0", params=DigestParams, output=DigestOutput)
async def digest(params: DigestParams, ctx: NodeContext) -> DigestOutput:
    """The length and sha256 of a string: proves a large input arrived whole."""
    return DigestOutput(
        length=len(params.data), sha256=hashlib.sha256(params.data.encode()).hexdigest()
    )


catalog = NodeCatalog([testing, versions])

staged = NodeGroup("staged", "two minors a test promotes, deprecates and rolls out itself")


def pick_node(version: str) -> None:
    @staged.node("test.pick", version, params=EchoParams, output=EchoOutput, tags=["testing"])
    async def pick(params: EchoParams, ctx: NodeContext) -> EchoOutput:
        """Say which version answered."""
        return EchoOutput(value=params.value, version=version)


for _v in ("1.0.0", "1.1.0"):
    pick_node(_v)

catalog.add(staged)


replicas = NodeGroup("replicas", "served by replicas that tests start and kill")


class WorkParams(BaseModel):
    seconds: float = 0.05
    n: int = 0


class WorkOutput(BaseModel):
    n: int
    pid: int


@replicas.node("test.work", "1.0.0", params=WorkParams, output=WorkOutput)
async def work(params: WorkParams, ctx: NodeContext) -> WorkOutput:
    """A little work that says which process did it."""
    await asyncio.sleep(params.seconds)
    return WorkOutput(n=params.n, pid=os.getpid())


catalog.add(replicas)
