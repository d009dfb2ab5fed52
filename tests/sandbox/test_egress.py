"""The egress proxy of `network: limited`, spoken to directly on its socket: a refusal names
the sandbox's own setting, the one that would open the address."""

from __future__ import annotations

import asyncio
import ipaddress

from sandbox.egress import EgressProxy


async def ask(proxy: EgressProxy, head: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_unix_connection(await proxy.socket())
    try:
        writer.write(head.encode())
        await writer.drain()
        answer = (await reader.read()).decode()
    finally:
        writer.close()
    status_line, _, rest = answer.partition("\r\n")
    return int(status_line.split(" ")[1]), rest.partition("\r\n\r\n")[2]


async def test_a_refusal_names_the_sandbox_setting():
    proxy = EgressProxy(allow_networks=[])
    try:
        status, body = await ask(proxy, "CONNECT 10.1.2.3:443 HTTP/1.1\r\n\r\n")
        assert status == 403
        assert "refused to connect to 10.1.2.3 (private)" in body
        assert "REFLUX_SANDBOX_ALLOW_NETWORKS" in body, body
        assert "REFLUX_HTTP_ALLOW_NETWORKS" not in body
        status, body = await ask(proxy, "GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 403 and "(loopback)" in body and "REFLUX_SANDBOX_ALLOW_NETWORKS" in body
    finally:
        await proxy.close()


async def test_an_allowed_network_is_not_refused():
    proxy = EgressProxy(allow_networks=[ipaddress.ip_network("127.0.0.1/32")])
    try:
        # nothing listens on port 9: refused by the kernel (502), not by the rules (403)
        status, body = await ask(proxy, "CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
        assert status == 502, body
    finally:
        await proxy.close()
