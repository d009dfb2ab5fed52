-- Proposals of the evolution layer: the catalog people list and search. The lifecycle
-- workflow of each (Temporal, task queue reflux-evolution) is the one writer of `status`;
-- `body` is the contract JSON of EVOLUTION.md but for the history, which is its own table.
CREATE TABLE proposals (
    id text PRIMARY KEY,
    namespace text NOT NULL,
    workflow_id text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    source text NOT NULL,
    signature text NOT NULL DEFAULT '',
    body jsonb NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX proposals_by_workflow ON proposals (workflow_id, created_at DESC);
CREATE INDEX proposals_by_status ON proposals (status, created_at DESC);
-- A finding the Critic files again while its proposal is still open updates that proposal:
-- two scans at once cannot file it twice.
CREATE UNIQUE INDEX proposals_open_signature ON proposals (namespace, workflow_id, signature)
    WHERE signature <> ''
      AND status IN ('open', 'validating', 'validated', 'failed_validation', 'inconclusive');

-- Every transition: who, when, why.
CREATE TABLE proposal_history (
    id bigserial PRIMARY KEY,
    proposal_id text NOT NULL REFERENCES proposals (id),
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    previous text,
    status text NOT NULL,
    note text NOT NULL DEFAULT ''
);
CREATE INDEX proposal_history_by_proposal ON proposal_history (proposal_id, id);

-- Why a workflow version was pushed (e.g. the proposal it applies).
ALTER TABLE workflow_versions ADD COLUMN note text NOT NULL DEFAULT '';
