"""Every error the API answers has one shape, `{"error": {"code", "message", "details"}}`,
with a stable `code`; no stack trace ever leaves the process (it goes to the log, under an
id the message names)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from infra import (
    InputShapeError,
    LifecycleError,
    ManifestConflictError,
    NotFoundError,
    PinError,
    RefluxError,
    RegistryError,
    ServiceError,
    SpecError,
)

__all__ = ["ApiError", "ErrorBody", "database_unreachable", "install_handlers"]

log = logging.getLogger("reflux.api")

_STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "InvalidRequest",
    429: "RateLimited",
    503: "Unavailable",
}


class ApiError(Exception):
    """An answer other than success, raised from anywhere in a request."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _STATUS_CODES.get(status, "Error")
        self.details = details or {}
        self.headers = headers


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def from_reflux(exc: RefluxError) -> ApiError:
    if isinstance(exc, SpecError):
        problems = [str(p) for p in exc.problems]
        return ApiError(422, problems[0] if len(problems) == 1 else f"{len(problems)} problems",
                        code="SpecError", details={"problems": problems})  # fmt: skip
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc))
    if isinstance(exc, InputShapeError):
        return ApiError(422, str(exc), code="InvalidRequest")
    status = 400
    if isinstance(exc, LifecycleError | ManifestConflictError | PinError):
        status = 409
    elif isinstance(exc, ServiceError):
        status = 503
    elif not isinstance(exc, RegistryError):
        status = 400
    return ApiError(status, str(exc), code=exc.code)


_UNREACHABLE = (
    asyncpg.PostgresConnectionError,  # the connection failed or was lost mid-request
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def database_unreachable(exc: BaseException) -> str | None:
    """The one-line reason when `exc` says the registry's PostgreSQL cannot be reached,
    else None. A refused or timed-out connection surfaces as a bare OSError (TimeoutError
    included: an acquire that waited too long); only one raised inside asyncpg counts."""
    known = (
        isinstance(exc, _UNREACHABLE)
        # a connection, or the pool, closed under the request
        or (isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc))
        or (isinstance(exc, OSError) and _raised_in_asyncpg(exc))
    )
    if not known:
        return None
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    return f"the registry database is unreachable: {reason}"


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def reflux_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RefluxError)
        return error_response(from_reflux(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(ApiError(exc.status_code, str(exc.detail), headers=headers))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        details = {"errors": [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in errors]}
        return error_response(ApiError(422, f"{where}: {first['msg']}", details=details))

    async def unstorable(request: Request, exc: Exception) -> JSONResponse:
        # e.g. a NUL byte in a name: PostgreSQL text cannot hold it
        message = f"a value in the request is not valid text for the registry: {exc}"
        return error_response(ApiError(422, message.splitlines()[0]))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Also where an exception raised outside the routes (the audit middleware) lands.
        unreachable = database_unreachable(exc)
        if unreachable is not None:
            log.warning("%s %s: %s", request.method, request.url.path, unreachable)
            return error_response(ApiError(503, unreachable))
        incident = uuid.uuid4().hex[:12]
        log.exception("%s %s failed (incident %s)", request.method, request.url.path, incident)
        return error_response(
            ApiError(
                500, f"internal error (incident {incident}, in the API's log)", code="InternalError"
            )  # fmt: skip
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RefluxError, reflux_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(asyncpg.DataError, unstorable)
    app.add_exception_handler(Exception, unexpected)
