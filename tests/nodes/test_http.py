"""http.request against a real HTTP server on 127.0.0.1 (the machine is offline).

Most tests allow 127.0.0.1/32 the way a test deployment would; the SSRF tests use an
empty allow list and check that the server never saw a request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from infra.errors import (
    HttpConnectError,
    HttpStatusError,
    NodeTimeoutError,
    ResponseTooLargeError,
    SsrfError,
    ValidationError,
)
from infra.settings import HttpSettings, Settings
from nodes.builtin import http
from nodes.builtin.http import HttpRequestParams, HttpResponse
from nodes.protocol import CallIdentity
from nodes.sdk import NodeContext
from tests.helpers.httpserver import HttpTestServer, Reply, free_port, self_signed_cert

pytestmark = pytest.mark.timeout(30)


def context(
    allow: list[str] | None = None,
    *,
    timeout: float | None = None,
    max_response_bytes: int = 10 * 1024 * 1024,
) -> NodeContext:
    settings = Settings(
        http=HttpSettings(
            allow_networks=["127.0.0.1/32"] if allow is None else allow,
            max_response_bytes=max_response_bytes,
        )
    )
    return NodeContext(CallIdentity(step_id="call"), timeout=timeout, settings=settings)


async def call(ctx: NodeContext | None = None, **params: object) -> HttpResponse:
    return await http.request(HttpRequestParams.model_validate(params), ctx or context())


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as running:
        yield running


# --- the node's definition ------------------------------------------------------------


def test_node_is_registered_with_manifest() -> None:
    (definition,) = http.group.nodes
    assert definition.ref == "http.request@1.1.0"
    manifest = definition.manifest()
    assert manifest["secret_params"] == {
        "auth": "value",
        "headers": "value",
        "params": "value",
        "url": "query",
    }
    assert "json" in manifest["params"]["properties"]
    assert "json" in manifest["output"]["properties"]


def test_params_normalise_and_validate() -> None:
    params = HttpRequestParams.model_validate(
        {"method": "post", "url": "http://example.com/", "json": {"a": 1}}
    )
    assert params.method == "POST"
    assert params.model_dump()["json"] == {"a": 1}
    bad = [
        {"method": "FETCH", "url": "http://example.com/"},
        {"url": "ftp://example.com/"},
        {"url": "file:///etc/passwd"},
        {"url": "not a url"},
        {"url": "http://example.com/", "json": {}, "body": "x"},
        {"url": "http://example.com/", "unknown": 1},
        {"url": "http://example.com/", "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"url": "http://example.com/", "timeout": 0},
    ]
    for data in bad:
        with pytest.raises(PydanticValidationError):
            HttpRequestParams.model_validate(data)


def test_output_serialises_json_field_by_its_name() -> None:
    response = HttpResponse(
        status=200, headers={}, json={"a": 1}, text="", elapsed_ms=1.0, final_url="http://x/"
    )
    assert response.model_dump()["json"] == {"a": 1}
    assert '"json":{"a":1}' in response.model_dump_json()


# --- requests and responses -----------------------------------------------------------


async def test_get_json(server: HttpTestServer) -> None:
    response = await call(url=server.url("/json"))
    assert response.status == 200
    assert response.json_ == {"hello": "world"}
    assert response.headers["content-type"] == "application/json"
    assert response.final_url == server.url("/json")
    assert response.elapsed_ms > 0
    assert server.requests[0].headers["user-agent"].startswith("reflux-http/")


async def test_post_json_is_echoed(server: HttpTestServer) -> None:
    response = await call(
        method="post", url=server.url("/echo"), json={"order": 7, "tags": ["a", "é"]}
    )
    echoed = response.json_
    assert echoed["method"] == "POST"
    assert echoed["json"] == {"order": 7, "tags": ["a", "é"]}
    assert echoed["headers"]["content-type"] == "application/json"


async def test_body_and_headers_are_sent(server: HttpTestServer) -> None:
    response = await call(
        method="PUT",
        url=server.url("/echo"),
        body="plain words",
        headers={"X-Order": "7", "Content-Type": "text/plain"},
    )
    assert response.json_["body"] == "plain words"
    assert response.json_["headers"]["x-order"] == "7"
    assert response.json_["headers"]["content-type"] == "text/plain"


async def test_query_params_merge_with_url_query(server: HttpTestServer) -> None:
    response = await call(
        url=server.url("/echo?a=1"), params={"b": 2, "flag": True, "many": ["x", "y"]}
    )
    assert response.json_["query"] == {"a": ["1"], "b": ["2"], "flag": ["true"], "many": ["x", "y"]}
    assert "b=2" in response.final_url


async def test_host_header_keeps_the_name_while_connecting_to_the_checked_ip(
    server: HttpTestServer,
) -> None:
    response = await call(url=server.url("/echo", host="localhost"))
    assert response.json_["headers"]["host"] == f"localhost:{server.port}"
    assert response.final_url == server.url("/echo", host="localhost")


async def test_text_reply_has_no_json(server: HttpTestServer) -> None:
    response = await call(url=server.url("/text"))
    assert response.text == "hello, world"
    assert response.json_ is None


async def test_json_parsed_without_content_type(server: HttpTestServer) -> None:
    server.route("/bare", lambda _: Reply(body=b'{"n": 1}'))
    response = await call(url=server.url("/bare"))
    assert response.json_ == {"n": 1}


async def test_head_has_empty_body(server: HttpTestServer) -> None:
    response = await call(method="HEAD", url=server.url("/large?size=100"))
    assert response.status == 200
    assert response.text == ""
    assert response.headers["content-length"] == "100"


# --- statuses -------------------------------------------------------------------------


async def test_404_is_not_retryable(server: HttpTestServer) -> None:
    with pytest.raises(HttpStatusError) as caught:
        await call(url=server.url("/status/404"))
    error = caught.value
    assert not error.retryable
    assert error.details["status"] == 404
    assert error.details["body"] == "status 404"
    assert "returned 404" in error.message and "\n" not in error.message


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retryable(server: HttpTestServer, status: int) -> None:
    with pytest.raises(HttpStatusError) as caught:
        await call(url=server.url(f"/status/{status}?retry_after=3"))
    assert caught.value.retryable
    assert caught.value.details["retry_after"] == "3"
    assert caught.value.to_wire()["class"] == "HttpStatusError"


async def test_raise_for_status_false_returns_the_status(server: HttpTestServer) -> None:
    response = await call(url=server.url("/status/503"), raise_for_status=False)
    assert response.status == 503
    assert response.text == "status 503"


# --- redirects ------------------------------------------------------------------------


async def test_redirect_is_followed(server: HttpTestServer) -> None:
    response = await call(url=server.url("/redirects/3"))
    assert response.json_ == {"redirects": "done"}
    assert response.final_url == server.url("/redirects/0")
    assert len(server.requests) == 4


async def test_redirect_not_followed_when_disabled(server: HttpTestServer) -> None:
    response = await call(url=server.url("/redirects/1"), follow_redirects=False)
    assert response.status == 302
    assert response.headers["location"] == "/redirects/0"


async def test_too_many_redirects(server: HttpTestServer) -> None:
    with pytest.raises(HttpStatusError) as caught:
        await call(url=server.url("/redirects/10"), max_redirects=3)
    assert not caught.value.retryable
    assert "more than 3 redirects" in caught.value.message
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [(301, "POST", "GET"), (302, "POST", "GET"), (303, "PUT", "GET"), (307, "POST", "POST"),
     (308, "PUT", "PUT"), (302, "PUT", "PUT")],
)  # fmt: skip
async def test_redirect_method_rules(
    server: HttpTestServer, status: int, method: str, expected: str
) -> None:
    target = server.url("/echo")
    response = await call(
        method=method, url=server.url(f"/redirect?status={status}&to={target}"), json={"a": 1}
    )
    assert response.json_["method"] == expected
    assert response.json_["json"] == ({"a": 1} if expected != "GET" else None)


async def test_cross_origin_redirect_drops_credentials(server: HttpTestServer) -> None:
    target = server.url("/echo", host="localhost")  # another origin, same machine
    response = await call(
        url=server.url(f"/redirect?to={target}"),
        headers={"Authorization": "Bearer s3cret", "X-Keep": "1"},
    )
    assert "authorization" not in response.json_["headers"]
    assert response.json_["headers"]["x-keep"] == "1"
    assert server.requests[0].headers["authorization"] == "Bearer s3cret"


async def test_cross_origin_redirect_drops_headers_that_carry_a_secret(
    server: HttpTestServer,
) -> None:
    target = server.url("/echo", host="localhost")
    ctx = dataclasses.replace(context(), secrets=("sk_live_123456",))
    response = await call(
        ctx,
        url=server.url(f"/redirect?to={target}"),
        headers={"X-Api-Key": "sk_live_123456", "X-Pin": "pin=sk_live_123456;", "X-Keep": "1"},
    )
    sent = response.json_["headers"]
    assert "x-api-key" not in sent and "x-pin" not in sent and sent["x-keep"] == "1"
    assert server.requests[0].headers["x-api-key"] == "sk_live_123456"  # the first origin's


# --- limits and failures --------------------------------------------------------------


async def test_body_over_limit_by_content_length(server: HttpTestServer) -> None:
    with pytest.raises(ResponseTooLargeError) as caught:
        await call(context(max_response_bytes=1000), url=server.url("/large?size=5000"))
    assert caught.value.details["content_length"] == 5000
    assert not caught.value.retryable


async def test_body_over_limit_while_streaming(server: HttpTestServer) -> None:
    size = 4 * 1024 * 1024
    with pytest.raises(ResponseTooLargeError) as caught:
        await call(
            context(max_response_bytes=100_000), url=server.url(f"/large?size={size}&chunked=1")
        )
    assert 100_000 < caught.value.details["received"] < size


async def test_body_at_limit_is_fine(server: HttpTestServer) -> None:
    response = await call(context(max_response_bytes=5000), url=server.url("/large?size=5000"))
    assert len(response.text) == 5000


async def test_timeout(server: HttpTestServer) -> None:
    with pytest.raises(NodeTimeoutError) as caught:
        await call(url=server.url("/slow?delay=10"), timeout=0.3)
    assert caught.value.retryable


async def test_step_timeout_caps_the_request_timeout(server: HttpTestServer) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NodeTimeoutError):
        await call(context(timeout=0.3), url=server.url("/slow?delay=10"), timeout=20)
    assert loop.time() - started < 5


async def test_connection_refused_is_retryable() -> None:
    port = free_port()
    with pytest.raises(HttpConnectError) as caught:
        await call(url=f"http://127.0.0.1:{port}/")
    assert caught.value.retryable
    assert caught.value.to_wire()["retryable"] is True


async def test_unresolvable_host_is_a_connect_error() -> None:
    with pytest.raises(HttpConnectError) as caught:
        await call(url="http://no-such-host.invalid/")
    assert caught.value.retryable


async def test_bad_json_value_is_a_validation_error(server: HttpTestServer) -> None:
    with pytest.raises(ValidationError):
        await call(method="POST", url=server.url("/echo"), json={"x": float("nan")})
    assert server.requests == []


async def test_https_sends_the_name_as_sni_to_the_checked_ip(tmp_path: Path) -> None:
    pair = self_signed_cert(tmp_path, "localhost")
    if pair is None:
        pytest.skip("openssl is not installed")
    with HttpTestServer(tls=pair) as tls_server:
        # The certificate is self-signed, so verification fails after the handshake
        # started: enough to see which name the client asked for.
        with pytest.raises(HttpConnectError) as caught:
            await call(url=tls_server.url("/json", host="localhost"))
    assert tls_server.sni_names == ["localhost"]
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message


# --- SSRF -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0177.0.0.1",
        "0x7f000001",
        "0x7f.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
    ],
)
async def test_loopback_spellings_are_refused_before_connecting(
    server: HttpTestServer, host: str
) -> None:
    with pytest.raises(SsrfError) as caught:
        await call(context(allow=[]), url=f"http://{host}:{server.port}/json")
    error = caught.value
    assert not error.retryable
    assert "REFLUX_HTTP_ALLOW_NETWORKS" in error.message and "\n" not in error.message
    assert "loopback" in error.message
    assert server.requests == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[::1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[64:ff9b::a00:1]/", "NAT64 10.0.0.1 is private"),
        ("http://[2002:7f00:1::]/", "6to4 127.0.0.1 is loopback"),
    ],
)
async def test_non_public_addresses_are_refused(url: str, reason: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SsrfError) as caught:
        await call(context(allow=[]), url=url)
    assert reason in caught.value.message
    assert loop.time() - started < 1  # refused, not a connect attempt that timed out


async def test_refusal_message_is_one_clear_line(server: HttpTestServer) -> None:
    with pytest.raises(SsrfError) as caught:
        await call(context(allow=[]), url=f"http://user:pw@127.0.0.1:{server.port}/a?token=t")
    assert caught.value.message == (
        f"refused to connect to 127.0.0.1 (loopback) for http://127.0.0.1:{server.port}/a; "
        "allow it with REFLUX_HTTP_ALLOW_NETWORKS"
    )
    assert caught.value.details["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    "location",
    ["http://10.0.0.1/", "http://[::1]:{port}/json", "http://127.0.0.2:{port}/json",
     "http://0x7f.0.0.2:{port}/json"],
)  # fmt: skip
async def test_redirect_to_private_address_is_refused(
    server: HttpTestServer, location: str
) -> None:
    location = location.format(port=server.port)
    with pytest.raises(SsrfError):
        await call(url=server.url(f"/redirect?to={location}"))
    assert [r.route for r in server.requests] == ["/redirect"]


async def test_redirect_to_other_loopback_server_never_reaches_it(server: HttpTestServer) -> None:
    with HttpTestServer(host="127.0.0.2") as other:
        with pytest.raises(SsrfError) as caught:
            await call(url=server.url(f"/redirect?to={other.url('/json')}"))
        assert other.requests == []
    assert "127.0.0.2 (loopback)" in caught.value.message


async def test_redirect_to_non_http_scheme_is_refused(server: HttpTestServer) -> None:
    with pytest.raises(SsrfError):
        await call(url=server.url("/redirect?to=file:///etc/passwd"))


async def test_allow_list_opens_exactly_its_networks(server: HttpTestServer) -> None:
    ctx = context(allow=["127.0.0.0/8"])
    with HttpTestServer(host="127.0.0.2") as other:
        response = await call(ctx, url=server.url(f"/redirect?to={other.url('/json')}"))
        assert response.json_ == {"hello": "world"}
        assert response.final_url == other.url("/json")
        assert len(other.requests) == 1


async def test_https_certificate_is_verified_for_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = self_signed_cert(tmp_path, "localhost")
    if pair is None:
        pytest.skip("openssl is not installed")
    # Trust the test certificate the way an operator would add a CA: SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(pair[0]))
    http._ssl_context.cache_clear()
    try:
        with HttpTestServer(tls=pair) as tls_server:
            response = await call(url=tls_server.url("/json", host="localhost"))
            assert response.json_ == {"hello": "world"}
            assert tls_server.requests[0].headers["host"] == f"localhost:{tls_server.port}"
            # The same server by IP: the certificate names localhost, not 127.0.0.1.
            with pytest.raises(HttpConnectError) as caught:
                await call(url=tls_server.url("/json"))
            assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    finally:
        http._ssl_context.cache_clear()
