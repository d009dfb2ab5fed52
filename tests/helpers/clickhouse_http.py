"""The chdb engine served over ClickHouse's HTTP interface, for tests of the server code path.

It stands in for a ClickHouse server because none can be installed here (Debian's
clickhouse-server is from 2018 and breaks clickhouse-connect; nothing is downloaded). The
engine is the same ClickHouse as chdb, so only the HTTP layer is ours, and it does what a
server does with what clickhouse-connect's HTTP client sends, which stays unchanged:

- `GET /ping` answers `Ok.`; any other request runs SQL: the `query` parameter, then the
  body (both may be set: an INSERT's statement in the URL and its data in the body).
- `INSERT … FORMAT X` followed by data (Native, RowBinary, JSONEachRow, …) is run as
  `INSERT … FROM INFILE` on a temporary file holding that data.
- `param_<name>` binds `{name:Type}`; `database` is the current database; every other
  parameter is a setting, applied to the request alone (one engine handle per request).
- a `multipart/form-data` body carries parameters as form fields (`query` among them), as
  clickhouse-connect sends binds longer than 4 kB.
- request bodies in lz4/zstd/gzip/deflate (Content-Encoding) are decompressed;
  responses are always sent uncompressed, which a client must accept.
- errors answer 500 with ClickHouse's message and X-ClickHouse-Exception-Code.

It runs as its own process (`python -m tests.helpers.clickhouse_http DIR`), because a
process can own only one chdb directory; `clickhouse_http_server(dir)` starts and stops it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]

NOT_SETTINGS = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "compress",
    "decompress",
    "buffer_size",
    "wait_end_of_query",
    "client_protocol_version",
    "user",
    "password",
    "quota_key",
    "role",
}
"""URL parameters the HTTP interface consumes itself; the rest are settings."""

_INSERT = re.compile(rb"\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.S | re.I)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
_RESULT_VERBS = ("SELECT", "WITH", "SHOW", "DESC", "EXISTS", "EXPLAIN", "(")


@contextmanager
def clickhouse_http_server(directory: Path, timeout: float = 60) -> Iterator[str]:
    """Serve a chdb engine in `directory` over HTTP on a free loopback port; yield its URL
    (`http://127.0.0.1:PORT`) and stop the process when done."""
    directory.mkdir(parents=True, exist_ok=True)
    port_file = directory / "http.port"
    port_file.unlink(missing_ok=True)
    log = open(directory / "http.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.clickhouse_http", str(directory / "engine")],
        cwd=REPO,
        env={**os.environ, "CLICKHOUSE_HTTP_PORT_FILE": str(port_file)},
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(
            lambda: port_file.exists() or proc.poll() is not None,
            timeout=timeout,
            what="the ClickHouse HTTP stand-in to listen",
        )
        if proc.poll() is not None:
            raise AssertionError(f"the ClickHouse HTTP stand-in exited {proc.returncode}")
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class _Engine:
    """One chdb engine; each request gets its own handle, so settings and USE stay with it."""

    def __init__(self, path: str) -> None:
        import chdb

        self._chdb = chdb
        self.path = path
        self._keep = chdb.connect(path)  # holds the engine (and its lock) open
        self.lock = threading.Lock()

    def run(self, full: bytes, params: dict[str, str]) -> tuple[bytes, str | None]:
        """Run one request's SQL (and data); return the body and its format (None when
        the statement produces no result set, as a server leaves out X-ClickHouse-Format)."""
        conn = self._chdb.connect(self.path)
        try:
            if params.get("database"):
                conn.query(f"USE {_identifier(params['database'])}", "TabSeparated")
            settings = {
                k: v
                for k, v in params.items()
                if k not in NOT_SETTINGS and not k.startswith("param_")
            }
            if settings:  # one SET: like a server, check them all before any applies
                assignments = ", ".join(f"{_name(k)} = {_literal(v)}" for k, v in settings.items())
                conn.query(f"SET {assignments}", "TabSeparated")
            binds = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
            insert = _INSERT.match(full)
            if insert:
                return self._insert(conn, insert, full[insert.end() :]), None
            sql = full.decode()
            trailing = _TRAILING_FORMAT.search(sql)
            fmt = trailing[1] if trailing else params.get("default_format", "TabSeparated")
            result = conn.query(sql, fmt, params=binds or None)
            body = result.bytes() or b""
            produces = sql.lstrip().upper().startswith(_RESULT_VERBS)
            return body, fmt if (body or produces) else None
        finally:
            conn.close()

    @staticmethod
    def _insert(conn: Any, insert: re.Match[bytes], data: bytes) -> bytes:
        statement, fmt = insert[1].decode(), insert[2].decode()
        with tempfile.NamedTemporaryFile(suffix=f".{fmt}") as tmp:
            tmp.write(data)
            tmp.flush()
            path = tmp.name.replace("\\", "\\\\").replace("'", "\\'")
            conn.query(f"{statement} FROM INFILE '{path}' FORMAT {fmt}", "TabSeparated")
        return b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    engine: _Engine
    timezone = "UTC"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body = _decompress(self._body(), self.headers.get("Content-Encoding"))
        if url.path == "/ping":
            return self._reply(200, b"Ok.\n", {})
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            params |= _form_fields(content_type, body)
            body = b""
        query = params.get("query", "").encode()
        full = query + b"\n" + body if query and body else query or body
        query_id = params.get("query_id") or str(uuid.uuid4())
        headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": self.timezone}
        print(  # the request log (stdout goes to DIR/http.log)
            self.command,
            sorted(k for k in params if k != "query"),
            self.headers.get("Content-Encoding") or "-",
            f"{len(body)}B",
            flush=True,
        )
        try:
            with self.engine.lock:
                out, fmt = self.engine.run(full, params)
        except Exception as exc:  # chdb raises RuntimeError subclasses with the server text
            message = str(exc)
            message = message[message.find("Code: ") :] if "Code: " in message else message
            code = re.match(r"Code: (\d+)", message)
            headers["X-ClickHouse-Exception-Code"] = code[1] if code else "1000"
            return self._reply(500, (message.strip() + "\n").encode(), headers)
        if fmt is not None:
            headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = json.dumps({"read_rows": "0", "written_rows": "0"})
        self._reply(200, out, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a `multipart/form-data` body, by name."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
        for part in message.iter_parts()
    }


def _decompress(data: bytes, encoding: str | None) -> bytes:
    if not data or encoding in (None, "", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if encoding == "lz4":
        import lz4.frame

        out, rest = [], data
        while rest:  # a body may hold several frames back to back
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out.append(decompressor.decompress(rest))
            rest = decompressor.unused_data
        return b"".join(out)
    raise ValueError(f"unsupported Content-Encoding {encoding}")


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _name(setting: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", setting):
        raise ValueError(f"bad setting name {setting!r}")
    return setting


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(path: str) -> None:
    _Handler.engine = _Engine(path)
    timezone = _Handler.engine._keep.query("SELECT timezone()", "TabSeparated").bytes()
    _Handler.timezone = timezone.decode().strip() or "UTC"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port_file = os.environ.get("CLICKHOUSE_HTTP_PORT_FILE")
    if port_file:
        tmp = f"{port_file}.tmp"
        Path(tmp).write_text(str(server.server_address[1]))
        os.replace(tmp, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
