"""HTTP hygiene: CORS for configured origins, on answers and on problems alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway, problem_of

APP = "https://app.example"


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(
        settings.model_copy(update={"cors_origins": f"{APP}, https://b.example"})
    ) as gw:
        yield gw


async def test_preflight_from_an_allowed_origin(gw: Gateway) -> None:
    headers = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    resp = await gw.client.options("/v1/uploads:batch", headers=headers)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_answers_and_problems_carry_the_origin(gw: Gateway) -> None:
    ok = await gw.client.get("/v1/photos", headers=gw.auth() | {"Origin": APP})
    assert ok.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-ID" in ok.headers["Access-Control-Expose-Headers"]
    assert "Origin" in ok.headers["Vary"]
    denied = await gw.client.get("/v1/photos", headers={"Origin": APP})
    await problem_of(denied, 401)
    assert denied.headers["Access-Control-Allow-Origin"] == APP


async def test_other_origins_get_no_cors_headers(gw: Gateway) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = await gw.client.options("/v1/uploads", headers=headers)
    await problem_of(preflight, 405)
    assert "Access-Control-Allow-Origin" not in preflight.headers
    resp = await gw.client.get("/v1/photos", headers=gw.auth() | {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_no_cors_unless_configured(settings: Settings) -> None:
    async with gateway(settings) as gw:
        resp = await gw.client.get("/v1/photos", headers=gw.auth() | {"Origin": APP})
        assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/uploads", b"[" * 60_000, {"Content-Type": "application/json"}),
        ("POST", "/v1/uploads", b"{}", {"Content-Type": "application/json; charset=bogus"}),
        ("GET", "/v1/photos?cursor=" + "W" * 5000, None, {}),
        ("GET", "/v1/photos/a%00b", None, {}),
        ("DELETE", "/v1/photos/a%00b", None, {}),
    ],
    ids=["deep-json", "bogus-charset", "huge-cursor", "nul-id", "nul-id-delete"],
)
async def test_hostile_requests_get_4xx_problems_not_5xx(
    gw: Gateway, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    resp = await gw.client.request(method, path, data=body, headers={**gw.auth(), **headers})
    assert 400 <= resp.status < 500, await resp.text()
    assert resp.content_type == "application/problem+json"
