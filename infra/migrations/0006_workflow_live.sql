-- Workflow versions get a live pointer: the version a run of the workflow gets, and whose
-- triggers and cron are in force. A normal push makes its version live; a candidate is
-- stored without changing what is live, until promoted. A rollout sends a share of new runs,
-- chosen from the run id, to one other version. Every change is in `workflow_events`.

ALTER TABLE workflows ADD COLUMN live_version integer;
UPDATE workflows SET live_version = latest_version WHERE latest_version > 0;
ALTER TABLE workflows ADD CONSTRAINT workflows_live_version_fkey
    FOREIGN KEY (id, live_version) REFERENCES workflow_versions (workflow_id, version);

-- true: pushed as a candidate and not live since (a promotion clears it).
ALTER TABLE workflow_versions ADD COLUMN candidate boolean NOT NULL DEFAULT false;

-- At most one rollout per workflow: that share of new runs goes to `version`, not the live one.
CREATE TABLE workflow_rollouts (
    workflow_id text PRIMARY KEY REFERENCES workflows (id),
    version     integer NOT NULL,
    percent     integer NOT NULL CHECK (percent BETWEEN 1 AND 100),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version)
);

-- Every change to a workflow's versions: who, when, what.
CREATE TABLE workflow_events (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL,
    version     integer NOT NULL,
    action      text NOT NULL CHECK (action IN
                ('pushed', 'promoted', 'rollout_started', 'rollout_changed', 'rollout_ended')),
    detail      jsonb NOT NULL DEFAULT '{}',
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version)
);
CREATE INDEX workflow_events_by_workflow ON workflow_events (workflow_id, id);

-- The history starts with the versions already stored, as they were pushed.
INSERT INTO workflow_events (workflow_id, version, action, detail, actor, at)
SELECT workflow_id, version, 'pushed', '{"candidate": false, "recorded_by": "0006"}',
       created_by, created_at
FROM workflow_versions ORDER BY created_at, workflow_id, version;
