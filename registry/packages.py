"""Node code packages: a directory as a reproducible tar.gz in the object store.

The same files always give the same bytes (sorted entries, no timestamps or owners), so
the same code always gets the same `sha256:` key and re-publishing it stores nothing new.
A node version's `artifact_uri` points at its package. Unpacking refuses anything that
could escape the destination (absolute paths, `..`, links, devices) and caps the size.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path, PurePosixPath

from infra import ObjectStoreError
from registry.objects import ObjectStore

SKIPPED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
MAX_UNPACKED_BYTES = 100 * 1024 * 1024


def pack(directory: Path) -> bytes:
    """The files under `directory` (caches and VCS folders left out) as tar.gz bytes."""
    if not directory.is_dir():
        raise ObjectStoreError(f"cannot package {directory}: not a directory")
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(_files(directory)):
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _files(directory: Path) -> list[Path]:
    found = []
    for path in directory.rglob("*"):
        parts = path.relative_to(directory).parts
        if any(part in SKIPPED for part in parts) or path.suffix == ".pyc":
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
    return found


def unpack(data: bytes, destination: Path) -> list[Path]:
    """Extract a package into `destination`; return the files written. Members are written
    one by one (no `extractall`): only plain files and folders, only inside `destination`,
    modes reduced to 0644/0755."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ObjectStoreError(f"not a node package (tar.gz): {exc}") from None
    with tar:
        for member in members:
            if not member.isfile() and not member.isdir():
                raise ObjectStoreError(f"package member {member.name!r} is not a plain file")
            if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
                raise ObjectStoreError(f"package refused: {member.name!r} points outside it")
        if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
            raise ObjectStoreError(f"package unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        written = []
        for member in members:
            target = destination.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
            target.chmod(0o755 if member.mode & 0o111 else 0o644)
            written.append(target)
    return written


async def publish(store: ObjectStore, directory: Path) -> str:
    """Package `directory` into the store; return the package's URI (for `artifact_uri`)."""
    return store.uri(await store.put(pack(directory)))


async def fetch(store: ObjectStore, uri: str, destination: Path) -> list[Path]:
    """Unpack the package at `uri` (as `publish` returned it) into `destination`."""
    digest = uri.rstrip("/").rsplit("/", 1)[-1]
    return unpack(await store.get(f"sha256:{digest}"), destination)
