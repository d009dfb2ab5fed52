"""Define nodes (`NodeGroup.node`), serve them on NATS (`NodeService`), find who serves what."""

from infra import lazy
from nodes.discovery import ServedNode, discover, versions_by_name
from nodes.protocol import (
    CallIdentity,
    Identified,
    NodeReply,
    NodeRequest,
    exact_subject,
    major_subject,
)
from nodes.runtime import NodeService
from nodes.sdk import (
    EFFECTS,
    READ_ONLY,
    Effect,
    EffectRule,
    NodeCatalog,
    NodeContext,
    NodeDefinition,
    NodeGroup,
    call_effect,
)

__all__ = [
    "CallIdentity",
    "EFFECTS",
    "Effect",
    "EffectRule",
    "Identified",
    "NodeCatalog",
    "NodeContext",
    "NodeDefinition",
    "NodeGroup",
    "NodeReply",
    "NodeRequest",
    "NodeService",
    "READ_ONLY",
    "ServedNode",
    "SwitchParams",
    "builtin_catalog",
    "call_effect",
    "canonical_placeholders",
    "discover",
    "exact_subject",
    "idempotency_key",
    "major_subject",
    "pick_branch",
    "placeholder",
    "versions_by_name",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "nodes.builtin": ["builtin_catalog"],
        "nodes.builtin.core": ["SwitchParams", "pick_branch"],
        "nodes.protocol": ["idempotency_key"],
        "nodes.secrets": ["canonical_placeholders", "placeholder"],
    },
)
