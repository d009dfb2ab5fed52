"""Settings, the error tree and the embedded local stack."""

from infra.errors import (
    ConfigError,
    ExpressionError,
    HttpConnectError,
    HttpStatusError,
    NodeError,
    NodeTimeoutError,
    NoRespondersError,
    RefluxError,
    ResponseTooLargeError,
    RunError,
    ServiceError,
    SpecError,
    SsrfError,
    ValidationError,
)
from infra.settings import (
    DatabaseSettings,
    HttpSettings,
    NatsSettings,
    NodesSettings,
    Settings,
    TemporalSettings,
)

__all__ = [
    "ConfigError",
    "DatabaseSettings",
    "ExpressionError",
    "HttpConnectError",
    "HttpSettings",
    "HttpStatusError",
    "NatsSettings",
    "NoRespondersError",
    "NodeError",
    "NodeTimeoutError",
    "NodesSettings",
    "RefluxError",
    "ResponseTooLargeError",
    "RunError",
    "ServiceError",
    "Settings",
    "SpecError",
    "SsrfError",
    "TemporalSettings",
    "ValidationError",
]
