-- The registry: node versions and their lifecycle, rollouts, workflow versions, runs.
-- Forward-only: never edit a migration once applied anywhere; add the next file instead.

CREATE EXTENSION IF NOT EXISTS vector;   -- the Historian's embeddings
CREATE EXTENSION IF NOT EXISTS pg_trgm;  -- `reflux nodes search`

CREATE TABLE nodes (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    tags        text[] NOT NULL DEFAULT '{}',
    search_text text NOT NULL DEFAULT '',  -- name, description and tags, for trigram search
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);
CREATE INDEX nodes_search_trgm ON nodes USING gin (search_text gin_trgm_ops);

CREATE TABLE node_versions (
    name          text NOT NULL REFERENCES nodes (name),
    version       text NOT NULL,
    major         integer NOT NULL,
    minor         integer NOT NULL,
    patch         integer NOT NULL,
    status        text NOT NULL
                  CHECK (status IN ('draft', 'staging', 'production', 'deprecated')),
    manifest      jsonb NOT NULL,
    manifest_hash text NOT NULL,
    artifact_uri  text,
    changelog     text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, major, minor, patch)
);

-- At most one rollout per node: that share of new runs whose spec the version matches.
CREATE TABLE node_rollouts (
    name       text PRIMARY KEY REFERENCES nodes (name),
    version    text NOT NULL,
    percent    integer NOT NULL CHECK (percent BETWEEN 1 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    FOREIGN KEY (name, version) REFERENCES node_versions (name, version)
);

-- Every change to a node version: who, when, from what to what.
CREATE TABLE node_events (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    version     text NOT NULL,
    action      text NOT NULL CHECK (action IN ('registered', 'promoted', 'deprecated', 'rollout')),
    from_status text,
    to_status   text,
    detail      jsonb NOT NULL DEFAULT '{}',
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES node_versions (name, version)
);
CREATE INDEX node_events_by_version ON node_events (name, version, id);

CREATE TABLE workflows (
    id             text PRIMARY KEY,
    namespace      text NOT NULL DEFAULT 'default',
    description    text NOT NULL DEFAULT '',
    latest_version integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workflow_versions (
    workflow_id text NOT NULL REFERENCES workflows (id),
    version     integer NOT NULL CHECK (version > 0),
    source      text NOT NULL,
    spec        jsonb NOT NULL,
    spec_hash   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE runs (
    id               text PRIMARY KEY,
    workflow_id      text NOT NULL,
    workflow_version integer,           -- NULL: started from a file, not a stored version
    pins             jsonb NOT NULL,    -- step id -> {"node": name, "version": "x.y.z"}
    status           text NOT NULL
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    error            jsonb,
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    started_by       text NOT NULL,
    FOREIGN KEY (workflow_id, workflow_version) REFERENCES workflow_versions (workflow_id, version)
);
CREATE INDEX runs_by_workflow ON runs (workflow_id, started_at DESC);
