"""The registry: node versions and their lifecycle, workflow versions, the run ledger, and
the object store for artifacts and large values."""

from registry.nodes import NodeRegistry
from registry.objects import LocalObjectStore, ObjectStore, S3ObjectStore, object_store
from registry.runs import RunRecord, get_run
from registry.versions import Catalog, Rollout, VersionInfo, check_transition
from registry.workflows import WorkflowRegistry, parse_ref

__all__ = [
    "Catalog",
    "LocalObjectStore",
    "NodeRegistry",
    "ObjectStore",
    "Rollout",
    "RunRecord",
    "S3ObjectStore",
    "VersionInfo",
    "WorkflowRegistry",
    "check_transition",
    "get_run",
    "object_store",
    "parse_ref",
]
