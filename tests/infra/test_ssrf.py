"""The SSRF guard's address rules, without any HTTP."""

from __future__ import annotations

import ipaddress

import pytest

from infra import ssrf
from infra.errors import HttpConnectError, SsrfError
from infra.settings import HttpSettings

pytestmark = pytest.mark.timeout(30)

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
    ],
)
def test_numeric_hosts_parse_like_inet_aton(host: str, expected: str) -> None:
    assert str(ssrf.parse_ip_literal(host)) == expected


@pytest.mark.parametrize(
    "host", ["example.com", "localhost", "cafe", "deadbeef", "1.2.3.4.5", "08.0.0.1", "127.0.0.1 x"]
)
def test_names_are_not_literals(host: str) -> None:
    assert ssrf.parse_ip_literal(host) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local, cloud metadata service"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "reserved"),
        ("198.18.0.1", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fd00:ec2::254", "private, cloud metadata service"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "reserved"),
        ("::127.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1 is loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1 is private"),
        (
            "::ffff:169.254.169.254",
            "IPv4-mapped 169.254.169.254 is link-local, cloud metadata service",
        ),
        ("64:ff9b::7f00:1", "NAT64 127.0.0.1 is loopback"),
        ("64:ff9b:1::1", "private"),
        ("2002:c0a8:101::1", "6to4 192.168.1.1 is private"),
    ],
)
def test_non_public_addresses_have_a_reason(address: str, reason: str) -> None:
    assert ssrf.blocked_reason(ip(address)) == reason


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert ssrf.blocked_reason(ip(address)) is None


def test_allow_list_from_settings() -> None:
    allow = HttpSettings(allow_networks=["127.0.0.1/32", "10.0.0.0/8"]).allow_networks
    assert ssrf.refusal(ip("127.0.0.1"), allow) is None
    assert ssrf.refusal(ip("10.20.30.40"), allow) is None
    assert ssrf.refusal(ip("::ffff:127.0.0.1"), allow) is None  # same socket as 127.0.0.1
    assert ssrf.refusal(ip("127.0.0.2"), allow) == "loopback"
    assert ssrf.refusal(ip("::1"), allow) == "loopback"
    assert ssrf.refusal(ip("192.168.0.1"), allow) == "private"
    assert ssrf.refusal(ip("8.8.8.8"), []) is None


def test_allow_list_parses_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFLUX_HTTP_ALLOW_NETWORKS", "127.0.0.1/32, fd00::/8")
    allow = HttpSettings().allow_networks
    assert ssrf.is_allowed(ip("fd00::5"), allow)
    assert not ssrf.is_allowed(ip("fe80::1"), allow)


async def test_resolve_name_returns_all_addresses() -> None:
    addresses = await ssrf.resolve("localhost", 80)
    assert ip("127.0.0.1") in addresses


async def test_resolve_literal_skips_the_resolver() -> None:
    assert await ssrf.resolve("0x7f.1", 80) == [ip("127.0.0.1")]


async def test_resolve_checked_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(SsrfError) as caught:
        await ssrf.resolve_checked(
            "localhost", 80, allow_networks=[], url="http://localhost/x?key=secret"
        )
    assert caught.value.message == (
        "refused to connect to 127.0.0.1 (loopback) for http://localhost/x; "
        "allow it with REFLUX_HTTP_ALLOW_NETWORKS"
    )
    assert caught.value.details == {
        "url": "http://localhost/x",
        "host": "localhost",
        "address": "127.0.0.1",
        "reason": "loopback",
    }


async def test_resolve_checked_returns_allowed_addresses() -> None:
    allow = [ipaddress.ip_network("127.0.0.1/32")]
    assert await ssrf.resolve_checked(
        "localhost", 80, allow_networks=allow, url="http://localhost/"
    ) == [ip("127.0.0.1")]


async def test_unresolvable_name_is_retryable() -> None:
    with pytest.raises(HttpConnectError) as caught:
        await ssrf.resolve("no-such-host.invalid", 80)
    assert caught.value.retryable


def test_display_url_hides_userinfo_and_query() -> None:
    assert (
        ssrf.display_url("https://u:p@h.example:8443/a/b?token=x#f") == "https://h.example:8443/a/b"
    )
