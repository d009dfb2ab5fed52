"""Refuse outbound HTTP to loopback, private, link-local and other non-public addresses.

Why this module is careful:
- The check runs on the addresses a host *resolves to*, not on its spelling: `localhost`,
  `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1` and `[::ffff:127.0.0.1]` all reach
  127.0.0.1. Numeric IPv4 hosts are read with the C library's `inet_aton` rules, which is
  what `getaddrinfo` (and so every client on this machine) uses to connect.
- A host may resolve to several addresses; if ANY of them is refused the host is refused,
  so a DNS answer cannot smuggle one private address among public ones.
- IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the
  embedded IPv4 address, which is where the packets go.
- Callers must connect to the addresses returned by `resolve_checked`, never resolve the
  name again: a second lookup could answer differently (DNS rebinding).

Addresses inside `HttpSettings.allow_networks` (`REFLUX_HTTP_ALLOW_NETWORKS`) are allowed
whatever their kind.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from infra.errors import HttpConnectError, SsrfError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = [
    "IPAddress",
    "IPNetwork",
    "blocked_reason",
    "display_url",
    "is_allowed",
    "parse_ip_literal",
    "refusal",
    "resolve",
    "resolve_checked",
]

# Order matters only for the reason shown: the first matching range names it.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("169.254.169.254/32", "link-local, cloud metadata service"),
        ("255.255.255.255/32", "broadcast"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "private, cloud metadata service"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("100::/64", "reserved"),
        ("2001::/32", "reserved"),  # Teredo
        ("2001:db8::/32", "reserved"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("ff00::/8", "multicast"),
        ("::/8", "reserved"),  # after 64:ff9b:1::/48, which it contains; has ::a.b.c.d
    )
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_V4 = re.compile(r"^[0-9a-fA-FxX.]+$")


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a numeric host names, or None if `host` is a name to resolve.

    Accepts IPv6 with or without brackets (a `%25` zone id is unescaped) and IPv4 in every
    spelling `inet_aton` takes: `127.0.0.1`, `127.1`, `2130706433`, `0x7f000001`,
    `0177.0.0.1`, `0x7f.0.0.1`.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError:
            return None
    if not _NUMERIC_V4.match(host) or not any(c.isdigit() for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public address (e.g. "loopback"), or None if it is public.

    Ignores the allow list; see `refusal` for the decision that honours it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # drop a zone id
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind, v4 = embedded
            reason = blocked_reason(v4)
            return f"{kind} {v4} is {reason}" if reason else None
        ranges: Iterable[tuple[IPNetwork, str]] = _V6_RANGES
    else:
        ranges = _V4_RANGES
    for network, reason in ranges:
        if address in network:
            return reason
    # Anything else IANA lists as not globally reachable.
    return None if address.is_global else "reserved"


def is_allowed(address: IPAddress, allow_networks: Iterable[IPNetwork]) -> bool:
    """True if `address`, or the IPv4 address it embeds, is inside an allowed network."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        plain = ipaddress.IPv6Address(address.packed)
        candidates.append(plain)
        embedded = _embedded_ipv4(plain)
        if embedded is not None:
            candidates.append(embedded[1])
    networks = list(allow_networks)
    return any(ip in net for ip in candidates for net in networks if ip.version == net.version)


def refusal(address: IPAddress, allow_networks: Iterable[IPNetwork]) -> str | None:
    """The reason to refuse connecting to `address`, or None if it may be reached."""
    reason = blocked_reason(address)
    if reason is None or is_allowed(address, allow_networks):
        return None
    return reason


def display_url(url: str) -> str:
    """`url` without userinfo, query or fragment, fit for error messages (may hold secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a numeric host without a lookup), in resolver order.

    Raises HttpConnectError (retryable) if the name does not resolve.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HttpConnectError(
            f"could not resolve host {host!r}: {exc}", details={"host": host}
        ) from exc
    addresses: list[IPAddress] = []
    for family, *_, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise HttpConnectError(f"host {host!r} has no IP address", details={"host": host})
    return addresses


async def resolve_checked(
    host: str, port: int, *, allow_networks: Iterable[IPNetwork], url: str
) -> list[IPAddress]:
    """Resolve `host` and return its addresses, refusing them all if any one is not public.

    `url` is only for the message. Raises SsrfError (not retryable) or HttpConnectError.
    """
    networks = list(allow_networks)
    addresses = await resolve(host, port)
    for address in addresses:
        reason = refusal(address, networks)
        if reason is not None:
            raise SsrfError(
                f"refused to connect to {address} ({reason}) for {display_url(url)}; "
                "allow it with REFLUX_HTTP_ALLOW_NETWORKS",
                details={
                    "url": display_url(url),
                    "host": host,
                    "address": str(address),
                    "reason": reason,
                },
            )
    return addresses
