"""Users' webhook URLs cannot reach loopback, private, link-local or metadata addresses:
refused at creation, and connections at delivery time go only to checked addresses."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.settings import Settings
from shared.targets import GuardedResolver, forbidden
from tests.gateway_harness import Gateway, gateway, problem_of
from tests.harness import serve_local

REFUSED_ADDRESSES = [
    "127.0.0.1",
    "10.0.0.8",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.100.100.200",  # shared address space (another cloud's metadata)
    "0.0.0.0",
    "224.0.0.251",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",
    "ff02::1",
    "::ffff:127.0.0.1",  # v4-mapped
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_private_and_special_addresses_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert not forbidden(ipaddress.ip_address(address))


@pytest.fixture
async def strict(settings: Settings) -> AsyncIterator[Gateway]:
    assert not settings.webhook_allow_private_targets
    async with gateway(settings) as gw:
        yield gw


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://localhost/hook",  # a name resolving to 127.0.0.1
        "https://localhost:8443/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/hook",
        "https://does-not-resolve.invalid/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",  # IPv4 loopback wrapped in IPv6
        "https://[fe80::1]:8443/hook",
        "https://[fd00::1]/hook",
    ],
)
async def test_private_targets_are_refused_at_creation(strict: Gateway, url: str) -> None:
    body = {"url": url, "events": ["*"]}
    async with strict.client.post("/v1/webhooks", json=body, headers=strict.auth()) as resp:
        assert (await problem_of(resp, 422))["code"] == "unsafe_target"


async def test_a_public_ipv6_literal_is_a_target_and_a_zone_is_not(strict: Gateway) -> None:
    public = {"url": "https://[2606:4700:4700::1111]:8443/hook", "events": ["*"]}
    async with strict.client.post("/v1/webhooks", json=public, headers=strict.auth()) as resp:
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["url"] == public["url"]
    # A zone names an interface of the notifier's own host; the others are no address.
    for host in ("[fe80::1%25eth0]", "[:::]", "[1::2::3]", "[12345::]"):
        body = {"url": f"https://{host}/hook", "events": ["*"]}
        async with strict.client.post("/v1/webhooks", json=body, headers=strict.auth()) as resp:
            problem = await problem_of(resp, 422)
        assert problem["code"] == "invalid_request" and problem["errors"][0]["field"] == "url"


class Rebinding(AbstractResolver):
    """A name that resolved to a public address at creation and now answers 127.0.0.1."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


async def test_a_name_that_rebinds_to_loopback_is_never_connected_to() -> None:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    async with serve_local(app) as base:
        port = base.rsplit(":", 1)[1]
        url = f"http://rebound.example:{port}/hook"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=Rebinding())) as plain,
            plain.post(url) as resp,
        ):  # the receiver is there, unguarded
            assert resp.status == 204
        guarded = aiohttp.TCPConnector(resolver=GuardedResolver(Rebinding()))
        async with aiohttp.ClientSession(connector=guarded) as session:
            with pytest.raises(aiohttp.ClientConnectorError) as refused:
                await session.post(url)
    assert "loopback" in str(refused.value.os_error)
    assert hits == ["/hook"], "only the unguarded request arrived"
