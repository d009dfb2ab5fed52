"""The built-in `http.request` node: one HTTP call with an SSRF guard on every hop.

Why redirects are followed here and not by httpx: the SSRF check must run on every hop
after DNS resolution, and the connection must go to the very address that was checked
(a second lookup could answer differently: DNS rebinding). So each hop resolves the host
with `infra.ssrf.resolve_checked`, rewrites the URL's host to the checked IP, and keeps
the name in the `Host` header and, for https, in TLS SNI and certificate checks (the
`sni_hostname` request extension of httpcore).

Environment proxies (HTTP_PROXY, …) and .netrc are ignored (`trust_env=False`): a proxy
would connect on our behalf and bypass the guard. SSL_CERT_FILE/SSL_CERT_DIR still apply.

httpx exceptions are translated once, in `_translate_errors`, into the node error tree.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import re
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra import (
    HttpConnectError,
    HttpSettings,
    HttpStatusError,
    NodeError,
    NodeTimeoutError,
    ResponseTooLargeError,
    SsrfError,
    ValidationError,
    ssrf,
)
from nodes.sdk import NodeContext, NodeGroup

__all__ = ["HttpRequestParams", "HttpResponse", "group", "parse_http_url", "request"]

group = NodeGroup("http", "HTTP calls")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "reflux-http/1"
EXCERPT_CHARS = 500

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BODY_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-location",
    "transfer-encoding",
)
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie", "host")


class HttpAuth(BaseModel):
    """Credentials sent as the Authorization header: a bearer token, or basic auth."""

    model_config = ConfigDict(extra="forbid")

    bearer: str | None = None
    username: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _one_scheme(self) -> HttpAuth:
        if (self.bearer is None) == (self.username is None):
            raise ValueError("give either bearer, or username (and password)")
        return self

    def header(self) -> str:
        if self.bearer is not None:
            return f"Bearer {self.bearer}"
        pair = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class HttpRequestParams(BaseModel):
    """Params of `http.request`. `json` and `body` are exclusive. `secret()` may be used in
    `headers`, `auth`, `params` and the query string of `url`."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    method: str = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = Field(default=None, description="Sent as the Authorization header.")
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters.")
    json_: Any = Field(default=None, alias="json", description="Sent as application/json.")
    body: str | None = Field(default=None, description="Sent as UTF-8 text.")
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds for the whole call, redirects included. Default: "
        "REFLUX_HTTP_DEFAULT_TIMEOUT; never longer than the step's timeout.",
    )
    follow_redirects: bool = True
    max_redirects: int = Field(default=5, ge=0, le=30)
    raise_for_status: bool = True

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in METHODS:
                raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_http_url(value)
        return value.strip()

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"header {name!r} contains a line break or NUL")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestParams:
        if self.json_ is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        return self


class HttpResponse(BaseModel):
    """Output of `http.request`.

    `headers` has lower-case names; repeated headers are joined with ", ". `json` is the
    parsed body when the Content-Type mentions json (or is absent) and the body parses;
    otherwise None. `final_url` is the URL after redirects, without userinfo.
    """

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    status: int
    headers: dict[str, str]
    json_: Any = Field(default=None, alias="json")
    text: str
    elapsed_ms: float
    final_url: str


def parse_http_url(text: str) -> httpx.URL:
    """Parse an http(s) URL the way it will be fetched; raises ValueError if unusable.

    A numeric IPv4 host in any inet_aton spelling (`0177.0.0.1`, `2130706433`) is rewritten
    to dotted-quad, as browsers do, so httpx and the SSRF guard agree on it.
    """
    text = _canonical_numeric_host(text.strip())
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"invalid URL {ssrf.display_url(text)}: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are supported, not {url.scheme or 'none'!r}")
    if not url.host:
        raise ValueError(f"URL {ssrf.display_url(text)} has no host")
    return url


def _canonical_numeric_host(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    host = parts.hostname
    if not host or ":" in host:
        return text
    address = ssrf.parse_ip_literal(host)
    if address is None or str(address) == host:
        return text
    userinfo, at, hostport = parts.netloc.rpartition("@")
    port = hostport.rpartition(":")[2] if ":" in hostport else None
    netloc = f"{userinfo}{at}{address}" + (f":{port}" if port is not None else "")
    return parts._replace(netloc=netloc).geturl()


@group.node(
    "http.request",
    "1.1.0",  # 1.1: auth, and the params that may carry secret() are marked
    params=HttpRequestParams,
    output=HttpResponse,
    tags=["http"],
    secret_params={"headers": "value", "auth": "value", "params": "value", "url": "query"},
    effects="write",
    effects_when={"method": (["GET", "HEAD", "OPTIONS"], "read")},
)
async def request(params: HttpRequestParams, ctx: NodeContext) -> HttpResponse:
    """Make an HTTP request; refuses private and reserved addresses on every hop."""
    settings = ctx.settings.http
    timeout = params.timeout or settings.default_timeout
    if ctx.timeout is not None:
        timeout = min(timeout, ctx.timeout)
    try:
        url = parse_http_url(params.url)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if params.params:
        url = url.copy_merge_params({k: _query_value(v) for k, v in params.params.items()})

    started = time.perf_counter()
    with _translate_errors(params.method, url, timeout):
        async with asyncio.timeout(timeout), _client(timeout) as client:
            response, url = await _fetch(client, params, url, settings, ctx.secrets)
            try:
                status = response.status_code
                if params.raise_for_status and status >= 400:
                    excerpt = await _read_excerpt(response)
                    raise _status_error(params.method, url, response, excerpt)
                content = await _read_body(response, params.method, url, settings)
            finally:
                await response.aclose()

    text = _decode(content, response.charset_encoding)
    return HttpResponse(
        status=status,
        headers=dict(response.headers.items()),
        json=_parse_json(response.headers.get("content-type"), text),
        text=text,
        elapsed_ms=(time.perf_counter() - started) * 1000,
        final_url=str(url.copy_with(userinfo=b"")),
    )


async def _fetch(
    client: httpx.AsyncClient,
    params: HttpRequestParams,
    url: httpx.URL,
    settings: HttpSettings,
    secrets: Iterable[str] = (),
) -> tuple[httpx.Response, httpx.URL]:
    """Send the request and follow redirects; returns the final, unread response."""
    method = params.method
    headers = httpx.Headers(params.headers)
    if params.auth is not None:
        headers["authorization"] = params.auth.header()
    content: bytes | None = None
    if params.json_ is not None:
        try:
            content = json.dumps(
                params.json_, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"json is not JSON-serialisable: {exc}") from None
        headers.setdefault("content-type", "application/json")
    elif params.body is not None:
        content = params.body.encode()

    redirects = 0
    while True:
        response = await _send_pinned(client, method, url, headers, content, settings)
        location = response.headers.get("location")
        if not (params.follow_redirects and response.status_code in REDIRECT_STATUSES and location):
            return response, url
        await response.aclose()
        if redirects >= params.max_redirects:
            raise HttpStatusError(
                f"{params.method} {ssrf.display_url(params.url)}: more than "
                f"{params.max_redirects} redirects (last to {ssrf.display_url(location)})",
                retryable=False,
                details={"status": response.status_code, "redirects": redirects},
            )
        redirects += 1
        next_url = _redirect_target(url, location, response.status_code)
        method, headers, content = _redirected_request(
            response.status_code, method, headers, content, url, next_url, secrets
        )
        url = next_url


async def _send_pinned(
    client: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    headers: httpx.Headers,
    content: bytes | None,
    settings: HttpSettings,
) -> httpx.Response:
    """Check the host's addresses, then connect to one of exactly those addresses."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = await ssrf.resolve_checked(
        host, port, allow_networks=settings.allow_networks, url=str(url)
    )
    hop_headers = httpx.Headers(headers)
    hop_headers.setdefault("host", url.netloc.decode("ascii"))
    extensions: dict[str, Any] = {}
    if ssrf.parse_ip_literal(host) is None:
        extensions["sni_hostname"] = host
    last_error: httpx.ConnectError | None = None
    for address in addresses:
        pinned = client.build_request(
            method,
            url.copy_with(host=str(address)),
            headers=hop_headers,
            content=content,
            extensions=extensions,
        )
        try:
            return await client.send(pinned, stream=True)
        except httpx.ConnectError as exc:  # try the next address, as a resolver-aware client would
            last_error = exc
    assert last_error is not None
    raise last_error


def _redirect_target(url: httpx.URL, location: str, status: int) -> httpx.URL:
    try:
        target = url.join(_canonical_numeric_host(location))
    except (httpx.InvalidURL, ValueError) as exc:
        raise HttpStatusError(
            f"{ssrf.display_url(str(url))} redirected ({status}) to an invalid URL: {exc}",
            retryable=False,
            details={"status": status},
        ) from None
    if target.scheme not in ("http", "https"):
        raise SsrfError(
            f"refused redirect from {ssrf.display_url(str(url))} to a "
            f"{target.scheme or 'schemeless'} URL; only http and https are followed",
            details={"status": status, "url": ssrf.display_url(str(url))},
        )
    return target


def _redirected_request(
    status: int,
    method: str,
    headers: httpx.Headers,
    content: bytes | None,
    url: httpx.URL,
    target: httpx.URL,
    secrets: Iterable[str] = (),
) -> tuple[str, httpx.Headers, bytes | None]:
    """Method, headers and body of the next hop, following the Fetch standard; to another
    origin, neither credential headers nor any header carrying a secret's value go along."""
    headers = httpx.Headers(headers)
    if (status in (301, 302) and method == "POST") or (
        status == 303 and method not in ("GET", "HEAD")
    ):
        method, content = "GET", None
        for name in _BODY_HEADERS:
            headers.pop(name, None)
    if _origin(url) != _origin(target):
        for name in _CREDENTIAL_HEADERS:
            headers.pop(name, None)
        for name, value in list(headers.items()):
            if any(secret in value for secret in secrets):
                headers.pop(name, None)
    return method, headers, content


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


async def _read_body(
    response: httpx.Response, method: str, url: httpx.URL, settings: HttpSettings
) -> bytes:
    """The decoded body, refusing to hold more than `max_response_bytes`."""
    if method == "HEAD" or response.status_code in (204, 304):
        return b""
    limit = settings.max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(url, limit, {"content_length": int(declared)})
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise _too_large(url, limit, {"received": len(data)})
    return bytes(data)


async def _read_excerpt(response: httpx.Response) -> str:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= EXCERPT_CHARS * 4:
            break
    return _decode(bytes(data), response.charset_encoding)[:EXCERPT_CHARS]


def _too_large(url: httpx.URL, limit: int, details: dict[str, Any]) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"response from {ssrf.display_url(str(url))} is larger than {limit} bytes "
        "(REFLUX_HTTP_MAX_RESPONSE_BYTES)",
        details={"limit": limit, **details},
    )


def _status_error(
    method: str, url: httpx.URL, response: httpx.Response, excerpt: str
) -> HttpStatusError:
    status = response.status_code
    one_line = " ".join(excerpt.split())[:200]
    message = f"{method} {ssrf.display_url(str(url))} returned {status} {response.reason_phrase}"
    details: dict[str, Any] = {"status": status, "body": excerpt, "url": ssrf.display_url(str(url))}
    if "retry-after" in response.headers:
        details["retry_after"] = response.headers["retry-after"]
    return HttpStatusError(
        f"{message}: {one_line}" if one_line else message,
        retryable=status in RETRYABLE_STATUSES,
        details=details,
    )


@contextlib.contextmanager
def _translate_errors(method: str, url: httpx.URL, timeout: float) -> Iterator[None]:
    """The one place where httpx and asyncio exceptions become node errors."""
    where = f"{method} {ssrf.display_url(str(url))}"
    try:
        yield
    except NodeError:
        raise
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise NodeTimeoutError(
            f"{where} timed out after {timeout:g}s", details={"timeout": timeout}
        ) from exc
    except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise ValidationError(f"{where}: {exc}") from exc
    except httpx.TransportError as exc:  # connect/read/write errors, remote protocol errors
        raise HttpConnectError(
            f"{where} failed: {type(exc).__name__}: {exc or 'connection failed'}",
            details={"kind": type(exc).__name__},
        ) from exc
    except httpx.DecodingError as exc:
        raise NodeError(f"{where}: could not decode the response body: {exc}") from exc


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building one costs ~25 ms (it loads the CA bundle); share it between calls.
    return httpx.create_ssl_context()


def _client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=_ssl_context(),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout),
        headers={"user-agent": USER_AGENT},
    )


def _query_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_query_value(v) if not isinstance(v, list | dict) else json.dumps(v) for v in value]
    return json.dumps(value, separators=(",", ":"))


def _decode(content: bytes, charset: str | None) -> str:
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def _parse_json(content_type: str | None, text: str) -> Any:
    if not text.strip() or (content_type and "json" not in content_type.lower()):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
