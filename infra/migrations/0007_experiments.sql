-- Labels on the run ledger: what a run is part of (experiment=try1, arm=candidate,
-- shadow=true, rollout=ID@N), the run a shadow run replays, a variant's mutations.
ALTER TABLE runs ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE runs ADD COLUMN shadow_of text;
-- The graph mutations a variant run applied to its stored version (a rerun applies them too).
ALTER TABLE runs ADD COLUMN mutations jsonb NOT NULL DEFAULT '[]'::jsonb;
CREATE INDEX runs_by_labels ON runs USING gin (labels jsonb_path_ops);

-- A version registered before nodes declared effects takes its declaration once.
ALTER TABLE node_events DROP CONSTRAINT node_events_action_check;
ALTER TABLE node_events ADD CONSTRAINT node_events_action_check
    CHECK (action IN ('registered', 'promoted', 'deprecated', 'rollout', 'effects declared'));
