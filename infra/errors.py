"""The one error tree of Reflux.

    RefluxError
    ├── ConfigError            settings or environment are unusable
    ├── SpecError              a workflow file is invalid (carries every Problem found)
    ├── ServiceError           an embedded or external service failed to start or answer
    ├── ExpressionError        a template failed to compile or render, or went over a limit
    ├── InputShapeError        run inputs nest too deeply or are too large (a user's mistake)
    ├── SecretError            a secret cannot be stored or read (no key, wrong key, unset)
    ├── NodeError              a node call failed; on the wire: {class, message, retryable, details}
    │   ├── ValidationError    params did not match the node's model (not retryable)
    │   ├── NoRespondersError  nobody serves the node's subject (retryable)
    │   ├── NodeTimeoutError   the call exceeded the step's timeout (retryable)
    │   ├── HttpStatusError    http.request got a non-success status
    │   ├── HttpConnectError   http.request could not connect (retryable)
    │   ├── SsrfError          http.request refused a private/reserved address (not retryable)
    │   ├── ResponseTooLargeError
    │   └── CodeRunError       sandboxed code failed, timed out or was killed (not retryable)
    ├── RunError               a run failed or could not be started
    ├── RegistryError          the registry refused a change or a lookup
    │   ├── NotFoundError      no such node, version or workflow (with a did-you-mean)
    │   ├── LifecycleError     a status change the lifecycle does not allow
    │   ├── ManifestConflictError  a registered version's manifest changed under it
    │   └── PinError           a node spec resolves to no usable version
    ├── ObjectStoreError       the object store could not store or return an object
    └── SandboxError           a sandbox could not be set up (no bubblewrap, no Docker engine, …)

Errors that are stored or cross the wire carry a stable `code` (the class name) and a
`retryable` flag.
"""

from __future__ import annotations

from typing import Any


class RefluxError(Exception):
    """Base of every error Reflux raises on purpose."""

    retryable: bool = False

    @property
    def code(self) -> str:
        return type(self).__name__


class ConfigError(RefluxError, ValueError):
    pass


class ServiceError(RefluxError):
    pass


class RunError(RefluxError):
    pass


class ExpressionError(RefluxError, ValueError):
    pass


class InputShapeError(RefluxError, ValueError):
    pass


class SecretError(RefluxError):
    pass


class SpecError(RefluxError, ValueError):
    """A workflow file is invalid; `problems` holds every problem found, each with where."""

    def __init__(self, problems: list[Any]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NodeError(RefluxError):
    """An error from a node call. Subclasses fix `retryable`; the wire form keeps the class name."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
        error_class: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.details = details or {}
        self.error_class = error_class or type(self).__name__

    @property
    def code(self) -> str:
        return self.error_class

    def to_wire(self) -> dict[str, Any]:
        return {
            "class": self.error_class,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> NodeError:
        return cls(
            str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
            details=dict(data.get("details") or {}),
            error_class=str(data.get("class") or "NodeError"),
        )


class ValidationError(NodeError, ValueError):
    retryable = False


class NoRespondersError(NodeError):
    retryable = True


class NodeTimeoutError(NodeError, TimeoutError):
    retryable = True


class HttpStatusError(NodeError):
    retryable = False


class HttpConnectError(NodeError, ConnectionError):
    retryable = True


class SsrfError(NodeError, PermissionError):
    retryable = False


class ResponseTooLargeError(NodeError):
    retryable = False


class CodeRunError(NodeError):
    retryable = False


class RegistryError(RefluxError):
    pass


class NotFoundError(RegistryError, LookupError):
    pass


class LifecycleError(RegistryError):
    pass


class ManifestConflictError(RegistryError):
    pass


class PinError(RegistryError):
    pass


class ObjectStoreError(RefluxError):
    pass


class SandboxError(RefluxError):
    pass
