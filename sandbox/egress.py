"""`network: limited`: the run's only way out is this HTTP proxy, on a unix socket mounted
into the sandbox (which has no network of its own). The bootstrap relays
`http://127.0.0.1:3128` inside the sandbox to it and sets HTTP(S)_PROXY, so ordinary
clients (urllib, requests, httpx, curl) work unchanged.

The proxy applies http.request's SSRF rules (`infra.ssrf`): the target is resolved here,
refused if any address is loopback, private, link-local or otherwise not public (unless
in REFLUX_SANDBOX_ALLOW_NETWORKS), and the connection goes to the address checked. It
takes `CONNECT host:port` (HTTPS, or any TCP) and absolute-URI HTTP requests; after the
first request a connection is a plain pipe to that one checked address.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable
from urllib.parse import urlsplit

from infra import NodeError, SsrfError, ssrf

__all__ = ["EgressProxy"]

log = logging.getLogger(__name__)

HEAD_LIMIT = 16 * 1024
CONNECT_TIMEOUT_S = 10.0


class EgressProxy:
    """One backend's proxy, listening from its first use in the running event loop."""

    def __init__(self, allow_networks: Iterable[ssrf.IPNetwork]) -> None:
        self.allow_networks = list(allow_networks)
        self.path = os.path.join(tempfile.gettempdir(), f"reflux-egress-{os.getpid()}-{id(self)}")
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def socket(self) -> str:
        """The socket's path, once it listens."""
        loop = asyncio.get_running_loop()
        if self._server is None or self._loop is not loop:
            _unlink(self.path)
            self._server = await asyncio.start_unix_server(self._serve, self.path, limit=HEAD_LIMIT)
            self._loop = loop
            os.chmod(self.path, 0o666)  # each run has a uid of its own
            atexit.register(_unlink, self.path)
        return self.path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        _unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return await _answer(writer, 400, "a request head of at most 16 KiB")
            await self._forward(head, reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _forward(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = line.decode("latin-1").split(" ")
        except ValueError:
            return await _answer(writer, 400, "not an HTTP request line")
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host, first = host.strip("[]"), b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                return await _answer(writer, 400, "only CONNECT and http:// URLs are proxied")
            host, port_text = url.hostname, str(url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            first = f"{method} {path} {version}\r\n".encode("latin-1") + rest
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return await _answer(writer, 400, f"bad port in {target}")
        port = int(port_text)
        try:
            addresses = await self._resolve_checked(host, port)
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(str(addresses[0]), port), CONNECT_TIMEOUT_S
            )
        except NodeError as exc:
            log.info("sandbox egress refused %s:%s: %s", host, port, exc.message)
            return await _answer(writer, 403, exc.message)
        except (OSError, TimeoutError) as exc:
            return await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream_writer.write(first)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def _resolve_checked(self, host: str, port: int) -> list[ssrf.IPAddress]:
        """`ssrf.resolve_checked` with the sandbox's own setting in the refusal: the one
        that opens an address to sandboxed code is not http.request's."""
        addresses = await ssrf.resolve(host, port)
        for address in addresses:
            reason = ssrf.refusal(address, self.allow_networks)
            if reason is not None:
                raise SsrfError(
                    f"refused to connect to {address} ({reason}) for {host}:{port}; "
                    "allow it with REFLUX_SANDBOX_ALLOW_NETWORKS",
                    details={"host": host, "address": str(address), "reason": reason},
                )
        return addresses


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(64 * 1024):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = f"sandbox egress: {message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()
