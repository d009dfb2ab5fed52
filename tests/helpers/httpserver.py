"""A real HTTP(S) server on loopback for tests, with canned routes and a request log.

    with HttpTestServer() as server:           # binds 127.0.0.1 on a free port
        url = server.url("/json")
        ...
        assert server.requests == []           # nothing reached it

Routes (any method, HEAD included):
    /json                   200 {"hello": "world"}
    /echo                   200 JSON of what was received: method, path, query, headers, body, json
    /text                   200 text/plain "hello, world"
    /status/<code>          that status, body "status <code>"; ?retry_after=S adds Retry-After
    /redirect?to=URL        302 (or ?status=301|303|307|308) with Location: URL
    /redirects/<n>          302 to /redirects/<n-1> … /redirects/0 answers {"redirects": "done"}
    /large?size=N           N bytes of "x"; with &chunked=1 no Content-Length (close-delimited)
    /slow?delay=S           answers {"slow": true} after S seconds (or at once when closing)
Add others with `server.route("/path", handler)`; a handler takes a `RecordedRequest`
and returns a `Reply`.

`HttpTestServer(tls=(certfile, keyfile))` serves HTTPS and records the SNI names
clients sent in `server.sni_names`; `self_signed_cert(dir, name)` makes a pair with the
`openssl` command line tool (returns None if it is missing).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpTestServer", "RecordedRequest", "Reply", "free_port", "self_signed_cert"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    """The request target as sent: path and query."""
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def arg(self, name: str, default: str = "") -> str:
        return self.query.get(name, [default])[0]


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    """bytes and str are sent as they are; anything else as JSON."""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: int = 1
    """Split the body into this many writes (to exercise streaming readers)."""
    content_length: bool = True

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json")
        return data, headers


Route = Callable[[RecordedRequest], Reply]


class HttpTestServer:
    """A threaded stdlib HTTP server; a context manager that starts and stops it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: tuple[str | Path, str | Path] | None = None,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        self.sni_names: list[str | None] = []
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._routes: dict[str, Route] = {}
        self._server = _Server((host, port), _handler_class(self))
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self.scheme = "http"
        if tls is not None:
            self.scheme = "https"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            context.sni_callback = self._record_sni
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def route(self, path: str, handler: Route) -> None:
        self._routes[path] = handler

    def start(self) -> HttpTestServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HttpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record_sni(self, _sock: Any, name: str | None, _context: Any) -> None:
        with self._lock:
            self.sni_names.append(name)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _answer(self, request: RecordedRequest) -> Reply:
        route = request.route
        if route in self._routes:
            return self._routes[route](request)
        parts = route.strip("/").split("/")
        if route == "/json":
            return Reply(body={"hello": "world"})
        if route == "/echo":
            text = request.body.decode("utf-8", "replace")
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(
                body={
                    "method": request.method,
                    "path": request.path,
                    "query": request.query,
                    "headers": request.headers,
                    "body": text,
                    "json": parsed,
                }
            )
        if route == "/text":
            return Reply(body="hello, world")
        if parts[0] == "status" and len(parts) == 2:
            headers = {}
            if request.arg("retry_after"):
                headers["Retry-After"] = request.arg("retry_after")
            return Reply(status=int(parts[1]), body=f"status {parts[1]}", headers=headers)
        if route == "/redirect":
            status = int(request.arg("status", "302"))
            return Reply(status=status, headers={"Location": request.arg("to")})
        if parts[0] == "redirects" and len(parts) == 2:
            left = int(parts[1])
            if left <= 0:
                return Reply(body={"redirects": "done"})
            return Reply(status=302, headers={"Location": f"/redirects/{left - 1}"})
        if route == "/large":
            size = int(request.arg("size", "1048576"))
            chunked = request.arg("chunked") == "1"
            return Reply(
                body=b"x" * size,
                headers={"Content-Type": "application/octet-stream"},
                chunks=max(1, size // 65536),
                content_length=not chunked,
            )
        if route == "/slow":
            self.closing.wait(float(request.arg("delay", "5")))
            return Reply(body={"slow": True})
        return Reply(status=404, body=f"no route {route}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (timeouts, size limits) are expected here


def _handler_class(owner: HttpTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, a body may end at close.
        protocol_version = "HTTP/1.0"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            owner._record(request)
            reply = owner._answer(request)
            data, headers = reply.encoded()
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            if reply.content_length:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            step = max(1, -(-len(data) // reply.chunks))
            try:
                for start in range(0, len(data), step):
                    self.wfile.write(data[start : start + step])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for connection-refused tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path] | None:
    """A self-signed certificate and key for `name`, made with openssl; None without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
