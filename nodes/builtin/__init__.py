"""The built-in node library, as one catalog of groups."""

from nodes.builtin import core, http
from nodes.sdk import NodeCatalog


def builtin_catalog() -> NodeCatalog:
    return NodeCatalog([core.group, http.group], builtin=True)


__all__ = ["builtin_catalog"]
