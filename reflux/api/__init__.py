"""The HTTP API (FastAPI): every capability of the platform behind bearer tokens with
roles and namespaces, one JSON error shape, an audit log of mutating calls, request size
and rate limits. OpenAPI at /openapi.json, docs at /docs.

    app       create_app(settings), serve(settings)
    auth      tokens, roles, namespaces
    errors    the error shape and its codes
    guards    body size and rate limits
    context   what handlers share
    routes/   health, workflows, runs, traces (stats), nodes, tokens
"""

from reflux.api.app import create_app, serve

__all__ = ["create_app", "serve"]
