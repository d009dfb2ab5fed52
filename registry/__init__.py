"""Node and workflow registry in PostgreSQL, artifact store (built in the registry issue)."""
