"""The registry: node versions and their lifecycle, workflow versions, the run ledger, and
the object store for artifacts and large values."""

from infra import lazy
from registry.nodes import NodeRegistry
from registry.objects import LocalObjectStore, ObjectStore, S3ObjectStore, object_store
from registry.runs import RunRecord, get_run
from registry.versions import Catalog, Rollout, VersionInfo, check_transition
from registry.workflows import WorkflowRegistry, parse_ref

__all__ = [
    "Catalog",
    "Definition",
    "LocalObjectStore",
    "MIN_VALUE",
    "MIN_VALUE_WHY",
    "NodeRegistry",
    "ObjectStore",
    "Promotion",
    "Role",
    "Rollout",
    "RunRecord",
    "S3ObjectStore",
    "SecretStore",
    "Token",
    "TokenStore",
    "VersionInfo",
    "Workflow",
    "WorkflowEvent",
    "WorkflowRegistry",
    "WorkflowRollout",
    "WorkflowVersion",
    "audit",
    "check_name",
    "check_namespace",
    "check_transition",
    "fetch",
    "get_run",
    "moved_message",
    "object_store",
    "offload",
    "parse_ref",
    "runs",
]

__getattr__ = lazy(
    __name__,
    globals(),
    {
        "registry.objects": ["fetch", "offload"],
        "registry.secrets": ["MIN_VALUE", "MIN_VALUE_WHY", "SecretStore", "check_name"],
        "registry.tokens": ["Role", "Token", "TokenStore", "check_namespace"],
        "registry.workflows": [
            "Definition",
            "Promotion",
            "Workflow",
            "WorkflowEvent",
            "WorkflowRollout",
            "WorkflowVersion",
            "moved_message",
        ],
    },
    modules=["audit", "runs"],
)
