"""Which node versions are served right now, asked of the services themselves ($SRV.INFO)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client

from nodes.protocol import MANIFEST_KEY


@dataclass
class ServedNode:
    name: str
    version: str
    group: str
    manifest: dict[str, Any]
    instances: list[str] = field(default_factory=list)


async def discover(nc: Client, *, quiet: float = 0.1, limit: float = 1.0) -> list[ServedNode]:
    """Collect `$SRV.INFO` replies until none arrive for `quiet` seconds (at most `limit`)."""
    inbox = nc.new_inbox()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Any) -> None:
        replies.put_nowait(msg.data)

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish("$SRV.INFO", b"", reply=inbox)
        await nc.flush()
        deadline = time.monotonic() + limit
        found: dict[tuple[str, str], ServedNode] = {}
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(replies.get(), timeout=min(quiet, left))
            except TimeoutError:
                break
            info = json.loads(data)
            meta = info.get("metadata") or {}
            name = meta.get("reflux.node")
            if not name:
                continue
            key = (name, info["version"])
            if key not in found:
                found[key] = ServedNode(
                    name=name,
                    version=info["version"],
                    group=meta.get("reflux.group", ""),
                    manifest=json.loads(meta.get(MANIFEST_KEY) or "{}"),
                )
            found[key].instances.append(info["id"])
        return sorted(found.values(), key=lambda n: (n.name, _semver_key(n.version)))
    finally:
        await sub.unsubscribe()


def versions_by_name(served: list[ServedNode]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in served:
        out.setdefault(node.name, []).append(node.version)
    return out


def _semver_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))
