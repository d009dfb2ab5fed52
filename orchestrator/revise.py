"""New workflow versions from graph mutations: `reflux workflows mutate` and the API's
`POST /workflows/{id}/mutate`, and what the evolution layer applies.

The stored version's YAML is edited in place (`yamledit.edit_source`), so the author's
comments and layout survive and the diff is the changed lines; the edited text is then
validated as any pushed source is, and must mean what the mutations applied to the spec
mean (`mutations.apply_mutations`), so the text stored is the change that was checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from infra import SpecError
from orchestrator.mutations import apply_mutations, parse_mutations
from orchestrator.spec import Spec
from orchestrator.yamledit import diff_sources, edit_source
from orchestrator.yamlsource import Problem


@dataclass(frozen=True)
class Revision:
    workflow_id: str
    base: int
    """The version the mutations were applied to."""
    version: int
    created: bool
    """False: the mutations changed nothing, and `version` is the one that already held it."""
    candidate: bool
    went_live: bool
    """The new version is live now: its triggers are the workflow's (sync them)."""
    diff: str
    spec: Spec


async def revise(
    pool: asyncpg.Pool,
    actor: str,
    workflow_id: str,
    base: int | None,
    mutations: Any,
    *,
    candidate: bool = False,
    note: str = "",
) -> Revision:
    """Store stored version `base` (None: the live one) with `mutations` applied as the
    workflow's next version (a candidate when asked; `note` says why). SpecError when a
    mutation does not apply or the result is not valid; nothing is stored then."""
    from orchestrator.runs import load_version
    from orchestrator.validate import validate_text
    from registry import WorkflowRegistry

    changes = parse_mutations(mutations)
    loaded = await load_version(pool, workflow_id, base)
    stored = loaded.stored
    # seconds of CPU on a large source: not on the caller's event loop. The edited text is
    # checked first, so a problem names its line in what would be stored.
    source = await asyncio.to_thread(edit_source, stored.source, changes, stored.ref)
    spec, problems = await asyncio.to_thread(
        validate_text, source, f"{stored.ref} mutated", loaded.catalog
    )
    if spec is None:
        raise SpecError(problems)
    expected = await asyncio.to_thread(
        apply_mutations, loaded.spec, changes, loaded.catalog, stored.ref
    )
    if spec.definition(source).spec != expected.definition(source).spec:
        why = "the edited YAML does not mean what the mutations do (please report this)"
        raise SpecError([Problem(f"{stored.ref} mutated", 0, 0, "<root>", why)])
    pushed = await WorkflowRegistry(pool, actor).push(
        spec.definition(source), candidate=candidate, note=note
    )
    version = pushed.version.version
    return Revision(
        workflow_id,
        stored.version,
        version,
        pushed.created,
        candidate,
        pushed.went_live,
        diff_sources(stored.source, source, stored.ref, f"{workflow_id}@{version}"),
        spec,
    )
