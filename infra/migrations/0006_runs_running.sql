-- The reconciler pages through the runs still running (by id): keep that cheap on a large ledger.
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';
