-- The service API: tokens (stored hashed), an audit trail of every mutating call, and
-- the namespace of each run (tenants see only their own).

CREATE TABLE api_tokens (
    id          text PRIMARY KEY,               -- public part of the token: rfx_<id>_<secret>
    name        text NOT NULL DEFAULT '',
    role        text NOT NULL CHECK (role IN ('viewer', 'author', 'reviewer', 'admin')),
    namespace   text,                           -- NULL: every namespace
    secret_hash text NOT NULL,                  -- sha256 of the secret part
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    revoked_at  timestamptz,
    last_used_at timestamptz
);

CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    token_id  text,
    role      text,
    namespace text,
    method    text NOT NULL,
    path      text NOT NULL,
    action    text NOT NULL,
    status    integer NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_by_time ON audit_log (at DESC);

ALTER TABLE runs ADD COLUMN namespace text NOT NULL DEFAULT 'default';
CREATE INDEX runs_by_namespace ON runs (namespace, started_at DESC);
