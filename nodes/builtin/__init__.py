"""The built-in node library, as one catalog of groups."""

from nodes.builtin import code, core, http
from nodes.sdk import NodeCatalog


def builtin_catalog() -> NodeCatalog:
    return NodeCatalog([core.group, http.group, code.group], builtin=True)


__all__ = ["builtin_catalog"]
