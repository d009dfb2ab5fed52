"""Large values cross Temporal by reference: the bytes go to the object store.

These drive the data converter a Temporal client and worker are built with, against a real
local object store; what the converter hands to Temporal is what history would hold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio.contrib.pydantic import pydantic_data_converter

from infra.errors import ObjectStoreError
from orchestrator.payloads import data_converter
from registry.objects import LocalObjectStore

pytestmark = pytest.mark.timeout(60)

LIMIT = 256 * 1024


class Row(BaseModel):
    id: int
    name: str
    score: float


class Table(BaseModel):
    rows: list[Row]


def big_table() -> Table:
    """About 5 MB once serialized."""
    return Table(
        rows=[Row(id=i, name=f"row {i:08d} " + "x" * 64, score=i / 7) for i in range(50_000)]
    )


def stored_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


async def test_large_value_travels_by_reference(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    converter = data_converter(store, LIMIT)
    table = big_table()
    (plain,) = await pydantic_data_converter.encode([table])
    assert plain.ByteSize() > 4_000_000

    payloads = await converter.encode([table])

    assert all(payload.ByteSize() < LIMIT for payload in payloads)
    key = "sha256:" + hashlib.sha256(plain.SerializeToString()).hexdigest()
    assert await store.exists(key)
    assert await converter.decode(payloads, [Table]) == [table]


async def test_small_value_stays_inline(tmp_path: Path) -> None:
    converter = data_converter(LocalObjectStore(tmp_path / "objects"), LIMIT)
    value = {"name": "Ada", "items": list(range(100))}

    payloads = await converter.encode([value])

    assert await pydantic_data_converter.decode(payloads, [dict]) == [value]
    assert stored_files(tmp_path / "objects") == []


async def test_payload_of_exactly_the_limit_goes_to_the_store(tmp_path: Path) -> None:
    converter = data_converter(LocalObjectStore(tmp_path / "objects"), LIMIT)
    (probe,) = await pydantic_data_converter.encode(["x" * LIMIT])
    text = "x" * (2 * LIMIT - probe.ByteSize())  # size grows one byte per character here
    (exact,) = await pydantic_data_converter.encode([text])
    assert exact.ByteSize() == LIMIT
    (just_under,) = await pydantic_data_converter.encode([text[1:]])
    assert just_under.ByteSize() == LIMIT - 1

    await converter.encode([text[1:]])
    assert stored_files(tmp_path / "objects") == []
    await converter.encode([text])
    assert len(stored_files(tmp_path / "objects")) == 1


async def test_decoding_with_another_store_fails_clearly(tmp_path: Path) -> None:
    writer = data_converter(LocalObjectStore(tmp_path / "a"), LIMIT)
    reader = data_converter(LocalObjectStore(tmp_path / "b"), LIMIT)
    payloads = await writer.encode([big_table()])

    with pytest.raises(ObjectStoreError, match="not found"):
        await reader.decode(payloads, [Table])
