-- Secrets, sealed with AES-256-GCM under a key that is never in the database
-- (infra/secrets.py). A secret belongs to one namespace; `kind` keeps webhook signing keys
-- apart from what `secret()` in a workflow may read.
CREATE TABLE secrets (
    kind        text NOT NULL CHECK (kind IN ('secret', 'webhook')),
    namespace   text NOT NULL,
    name        text NOT NULL,
    nonce       bytea NOT NULL,
    sealed      bytea NOT NULL,
    key_id      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, namespace, name)
);

-- The reconciler pages through the runs still running (by id): keep that cheap on a large ledger.
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';
