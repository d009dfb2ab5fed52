"""Define nodes (`NodeGroup.node`), serve them on NATS (`NodeService`), find who serves what."""

from nodes.discovery import ServedNode, discover, versions_by_name
from nodes.protocol import NodeReply, NodeRequest, exact_subject, major_subject
from nodes.runtime import NodeService
from nodes.sdk import NodeCatalog, NodeContext, NodeDefinition, NodeGroup

__all__ = [
    "NodeCatalog",
    "NodeContext",
    "NodeDefinition",
    "NodeGroup",
    "NodeReply",
    "NodeRequest",
    "NodeService",
    "ServedNode",
    "discover",
    "exact_subject",
    "major_subject",
    "versions_by_name",
]
