"""Package faces that import a member's module only when the member is first used.

A face lists everything other packages may import (`__all__`), but importing the face must
stay cheap: the CLI imports `infra` for its errors and must not pull in asyncpg, nor a node
service the local stack's process control. `lazy` gives a package the module `__getattr__`
(PEP 562) that finds those members:

    __getattr__ = lazy(__name__, globals(), {"infra.stack": ["Stack"]}, modules=["ssrf"])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy(
    package: str,
    namespace: dict[str, Any],
    members: Mapping[str, Iterable[str]],
    modules: Iterable[str] = (),
) -> Callable[[str], Any]:
    """`members` maps a module to the names it gives the face; `modules` are submodules the
    face offers whole (`from infra import ssrf`)."""
    origin = {name: module for module, names in members.items() for name in names}
    whole = set(modules)

    def __getattr__(name: str) -> Any:
        if name in whole:
            value = importlib.import_module(f"{package}.{name}")
        elif name in origin:
            value = getattr(importlib.import_module(origin[name]), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    return __getattr__
