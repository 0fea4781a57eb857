"""The browser-facing pages: the upload page and the API docs carry a content security
policy and the other page headers, the dev token reaches only a same-machine browser,
and a production gateway can turn the page off."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import jwt
import pytest

from services.dev import DEV_USER
from shared.settings import Settings
from tests.conftest import JWT_SECRET
from tests.gateway_harness import Gateway, gateway, problem_of

TOKEN = re.compile(r'<meta name="darkroom-dev-token" content="([^"]*)">')


@pytest.fixture
async def dev(settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway as `darkroom dev` runs it."""
    async with gateway(settings, dev_user=DEV_USER) as gw:
        yield gw


async def page_token(gw: Gateway, **headers: str) -> str:
    resp = await gw.client.get("/", headers=headers)
    assert resp.status == 200
    found = TOKEN.search(await resp.text())
    assert found is not None
    return found[1]


@pytest.mark.parametrize("path", ["/", "/docs"])
async def test_pages_carry_a_content_security_policy_and_the_page_headers(
    dev: Gateway, path: str
) -> None:
    resp = await dev.client.get(path)
    assert resp.status == 200 and resp.content_type == "text/html"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src 'self';" in csp, "no inline script runs"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_the_upload_page_may_reach_storage_and_nothing_else(dev: Gateway) -> None:
    resp = await dev.client.get("/")
    storage = dev.res.settings.s3_endpoint_url.rstrip("/")
    assert f"connect-src 'self' {storage};" in resp.headers["Content-Security-Policy"]
    for asset in ("/assets/main.js", "/assets/thumbhash.js", "/assets/upload.css"):
        served = await dev.client.get(asset)
        assert served.status == 200 and served.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/docs", "/v1/photos", "/healthz"])
async def test_the_server_header_names_no_versions(dev: Gateway, path: str) -> None:
    resp = await dev.client.get(path)
    assert resp.headers["Server"] == "darkroom"


async def test_dev_gives_a_browser_on_this_machine_a_token_within_the_policy(
    dev: Gateway,
) -> None:
    token = await page_token(dev)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == DEV_USER
    assert claims["exp"] - claims["iat"] == dev.res.settings.auth_max_token_lifetime
    resp = await dev.client.get("/v1/photos", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200


@pytest.mark.parametrize(
    "host",
    ["photos.example", "attacker.example:8080", "10.0.0.5:8080", "me@localhost", "[::1"],
)
async def test_dev_gives_no_token_to_a_page_asked_for_by_another_host_name(
    dev: Gateway, host: str
) -> None:
    assert await page_token(dev, Host=host) == ""


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "[::1]:8080"])
async def test_loopback_host_names_count_as_this_machine(dev: Gateway, host: str) -> None:
    assert await page_token(dev, Host=host) != ""


async def test_dev_gives_no_token_to_a_request_with_an_origin(dev: Gateway) -> None:
    assert await page_token(dev, Origin="null") == ""
    assert await page_token(dev, Origin="http://127.0.0.1:8080") == ""


async def test_dev_with_cors_gives_no_token_at_all(settings: Settings) -> None:
    cors = settings.model_copy(update={"cors_origins": "*"})
    async with gateway(cors, dev_user=DEV_USER) as gw:
        assert await page_token(gw) == ""
        resp = await gw.client.get("/", headers={"Origin": "null"})
        assert resp.headers["Access-Control-Allow-Origin"] == "null"
        assert TOKEN.search(await resp.text())[1] == ""  # type: ignore[index]


async def test_a_gateway_outside_dev_never_puts_a_token_in_the_page(settings: Settings) -> None:
    async with gateway(settings) as gw:
        assert await page_token(gw) == ""


async def test_the_upload_page_can_be_turned_off(settings: Settings) -> None:
    async with gateway(settings.model_copy(update={"upload_page": False})) as gw:
        await problem_of(await gw.client.get("/"), 404)
        await problem_of(await gw.client.get("/assets/main.js"), 404)
        assert (await gw.client.get("/docs")).status == 200
