"""Node code packages: reproducible bytes, a round trip through the store, hostile archives."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from infra.errors import ObjectStoreError
from registry.objects import LocalObjectStore
from registry.packages import fetch, pack, publish, unpack


def make_node(root: Path) -> Path:
    (root / "my_node").mkdir(parents=True)
    (root / "my_node" / "__init__.py").write_text("VERSION = '1.0.0'\n")
    (root / "my_node" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "my_node" / "run.sh").chmod(0o755)
    (root / "my_node" / "__pycache__").mkdir()
    (root / "my_node" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    return root / "my_node"


def test_the_same_files_give_the_same_bytes(tmp_path: Path):
    node = make_node(tmp_path / "a")
    first = pack(node)
    os.utime(node / "__init__.py", (0, 0))  # timestamps do not matter
    (node / "__pycache__" / "y.pyc").write_bytes(b"\1")  # neither do caches
    assert pack(node) == first
    (node / "__init__.py").write_text("VERSION = '1.0.1'\n")
    assert pack(node) != first


async def test_publish_and_fetch_round_trip(tmp_path: Path):
    store = LocalObjectStore(tmp_path / "objects")
    node = make_node(tmp_path / "src")
    uri = await publish(store, node)
    assert uri.startswith("file://") and await publish(store, node) == uri
    files = await fetch(store, uri, tmp_path / "out")
    assert sorted(p.name for p in files) == ["__init__.py", "run.sh"]
    assert (tmp_path / "out" / "__init__.py").read_text() == "VERSION = '1.0.0'\n"
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)


def hostile(name: str, kind: bytes = tarfile.REGTYPE) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (hostile("../escape.py"), "points outside it"),
        (hostile("/abs.py"), "points outside it"),
        (hostile("link", tarfile.SYMTYPE), "not a plain file"),
        (b"not a tarball", "not a node package"),
    ],
    ids=["dotdot", "absolute", "symlink", "garbage"],
)
def test_unpack_refuses_what_could_escape(tmp_path: Path, data: bytes, fragment: str):
    with pytest.raises(ObjectStoreError, match=fragment):
        unpack(data, tmp_path / "out")
    assert not (tmp_path / "escape.py").exists()


def test_pack_needs_a_directory(tmp_path: Path):
    with pytest.raises(ObjectStoreError, match="not a directory"):
        pack(tmp_path / "missing")
