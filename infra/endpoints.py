"""Where clients find the services, from settings alone.

A production process (a worker, a node group, the API in a cluster) reads the addresses in
its settings; on one machine, what `reflux up` recorded in HOME/stack.json fills in what
settings leave out, and the embedded defaults (loopback and the ports in settings) the
rest. Reading is all this module does: starting and stopping is `infra.stack`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ServiceError
from infra.settings import Settings

LOOPBACK = "127.0.0.1"
EMBEDDED_DB_USER = "reflux"
EMBEDDED_DB_NAME = "reflux"
STATE_FILE = "stack.json"


@dataclass(frozen=True)
class Addresses:
    """Where clients find the services."""

    temporal: str
    """host:port of the Temporal frontend."""
    nats: str
    """nats://host:port"""
    database: str
    """postgresql://user@host:port/db"""


def stack_home(settings: Settings) -> Path:
    """`settings.home` made absolute, once: children and later commands see the same dir."""
    return Path(settings.home).expanduser().resolve()


def embedded_database_url(settings: Settings, database: str = EMBEDDED_DB_NAME) -> str:
    return f"postgresql://{EMBEDDED_DB_USER}@{LOOPBACK}:{settings.database.port}/{database}"


def configured(settings: Settings) -> dict[str, str | None]:
    """Per service, the address settings give (None: the local stack runs it)."""
    return {
        "temporal": settings.temporal.address,
        "nats": settings.nats.url,
        "postgres": settings.database.url,
    }


def embedded(settings: Settings) -> dict[str, str]:
    """Per service, where the embedded one listens."""
    return {
        "temporal": f"{LOOPBACK}:{settings.temporal.port}",
        "nats": f"nats://{LOOPBACK}:{settings.nats.port}",
        "postgres": embedded_database_url(settings),
    }


def recorded(home: Path) -> dict[str, str]:
    """Per service, the address `reflux up` recorded under `home` (nothing when it did not)."""
    path = home / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read the stack state file {path}: {exc}") from exc
    return {
        item["name"]: item["address"]
        for item in data.get("processes", [])
        if isinstance(item, dict) and item.get("name") and item.get("address")
    }


def addresses(settings: Settings) -> Addresses:
    """Per service: the address in settings, else the one recorded by `up`, else the
    embedded default."""
    given = configured(settings)
    if all(given.values()):
        return Addresses(temporal=given["temporal"], nats=given["nats"], database=given["postgres"])
    found = recorded(stack_home(settings))
    default = embedded(settings)
    pick = {name: given[name] or found.get(name) or default[name] for name in default}
    return Addresses(temporal=pick["temporal"], nats=pick["nats"], database=pick["postgres"])
