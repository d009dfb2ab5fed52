"""A 5 MB value passes between two steps while Temporal history and NATS messages hold only
references: every payload in the run's history is checked to be under 256 KiB."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from infra.database import pool_for
from orchestrator.payloads import payload_sizes
from orchestrator.runs import connect_temporal, run_handle
from registry.runs import RunRecord, get_run
from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.timeout(180)

LIMIT = 256 * 1024
SIZE = 5_000_000


async def ledger(stack: RunningStack, run_id: str) -> RunRecord:
    async with pool_for(stack.settings) as pool:
        return await get_run(pool, run_id)


async def history_payload_sizes(stack: RunningStack, run_id: str) -> list[int]:
    client = await connect_temporal(stack.settings)
    history = await run_handle(client, run_id).fetch_history()
    return payload_sizes(history)


def test_a_5mb_output_passes_between_steps_by_reference(stack: RunningStack):
    result = stack.run(
        f"""
        id: big-values
        steps:
          - id: make
            node: test.blob@1
            with: {{size: {SIZE}}}
          - id: check
            node: test.digest@1
            with: {{data: "{{{{ steps.make.output.data }}}}"}}
        outputs:
          length: "{{{{ steps.check.output.length }}}}"
          sha256: "{{{{ steps.check.output.sha256 }}}}"
          head: "{{{{ steps.make.output.data[:3] }}}}"
          status: "{{{{ steps.make.output.status }}}}"
        """
    )
    assert result.status == "completed", result.error
    expected = hashlib.sha256(b"x" * SIZE).hexdigest()
    assert result.outputs == {"length": SIZE, "sha256": expected, "head": "xxx", "status": "made"}
    assert len(result.steps["make"].output["data"]) == SIZE

    sizes = asyncio.run(history_payload_sizes(stack, result.run_id))
    assert sizes, "the history has payloads"
    assert max(sizes) < LIMIT, f"largest payload in history: {max(sizes)} bytes"
    objects = list((stack.home / "objects").rglob("*"))
    assert sum(p.stat().st_size for p in objects if p.is_file()) >= SIZE  # they went somewhere


def test_small_values_stay_inline(stack: RunningStack, tmp_path: Any):
    before = {p for p in (stack.home / "objects").rglob("*") if p.is_file()}
    result = stack.run(
        """
        id: small-values
        steps:
          - {id: a, node: test.blob@1, with: {size: 1000, char: "y"}}
        """
    )
    assert result.status == "completed", result.error
    after = {p for p in (stack.home / "objects").rglob("*") if p.is_file()}
    assert after == before


def test_a_failed_run_with_large_outputs_keeps_its_history_small(stack: RunningStack, tmp_path):
    result = stack.run(
        f"""
        id: big-then-fail
        steps:
          - {{id: make, node: test.blob@1, with: {{size: {SIZE}}}}}
          - id: boom
            node: test.flaky@1
            needs: [make]
            with: {{record_dir: "{tmp_path}", failures: 9, retryable: false}}
        """
    )
    assert result.status == "failed" and result.failed_step == "boom"
    ended = asyncio.run(ledger(stack, result.run_id))
    assert ended.status == "failed" and ended.error["step"] == "boom"
    assert ended.error["class"] == "FlakyError" and ended.ended_at is not None
    assert len(result.steps["make"].output["data"]) == SIZE  # the step table came back whole
    sizes = asyncio.run(history_payload_sizes(stack, result.run_id))
    assert max(sizes) < LIMIT, f"largest payload in history: {max(sizes)} bytes"
