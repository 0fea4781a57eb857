"""`GET /v1/events` connections on one gateway: the per-user cap, keep-alive comments,
credentials checked at the start and while open, CORS, and a prompt end at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.gateway.apikeys import create_key, revoke_key
from services.gateway.auth import issue_token
from services.gateway.service import serve
from shared.resources import open_resources
from shared.settings import Settings
from tests.conftest import JWT_SECRET
from tests.gateway_harness import Gateway, gateway, problem_of
from tests.harness import free_port
from tests.live_harness import marker, sample, stream
from tests.sse import SseReader


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    calm = settings.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 0})
    async with gateway(calm) as gw:
        yield gw


async def test_a_user_over_the_stream_cap_gets_429_too_many_streams(settings: Settings) -> None:
    capped = settings.model_copy(update={"events_max_streams_per_user": 2, "rate_limit_user": 0})
    async with gateway(capped) as gw, stream(gw, "alice"), stream(gw, "alice"):
        resp = await gw.client.get("/v1/events", headers=gw.auth("alice"))
        body = await problem_of(resp, 429)
        assert body["code"] == "too_many_streams"
        assert sample(gw, "darkroom_event_streams") == 2
        async with stream(gw, "bob") as other:
            assert other.response.status == 200
    async with gateway(capped) as gw:
        async with stream(gw, "alice"), stream(gw, "alice"):
            pass
        async with stream(gw, "alice") as again:
            assert again.response.status == 200, "closed streams free their slots"


async def test_keep_alive_comments_arrive_while_nothing_happens(settings: Settings) -> None:
    chatty = settings.model_copy(update={"events_keepalive": 0.05, "rate_limit_user": 0})
    async with gateway(chatty) as gw, stream(gw, "alice") as sse:
        assert await sse.comment() == "keep-alive"


async def test_the_stream_needs_credentials_like_every_route(gw: Gateway) -> None:
    resp = await gw.client.get("/v1/events")
    assert (await problem_of(resp, 401))["code"] == "unauthorized"
    resp = await gw.client.get("/v1/events", headers=gw.auth() | {"Last-Event-ID": "a b"})
    assert (await problem_of(resp, 422))["code"] == "invalid_request"


async def test_gateway_shutdown_ends_open_streams_without_waiting_out_the_grace(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"gateway_port": free_port(), "shutdown_grace": 60.0})
    async with open_resources(settings) as res:
        await res.storage.ensure_bucket()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(settings, stop, resources=res, health=False))
        base = f"http://127.0.0.1:{settings.gateway_port}"
        token = {"Authorization": f"Bearer {issue_token(JWT_SECRET, 'alice')}"}
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    resp = await http.get(f"{base}/v1/events", headers=token)
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            sse = SseReader(resp)
            stop.set()
            # Far below the 60 s grace: a stream that held the drain would fail here.
            assert await sse.ended(timeout=20)
            await asyncio.wait_for(server, 20)


async def test_a_stream_ends_when_its_token_expires_or_its_api_key_is_revoked(
    settings: Settings,
) -> None:
    strict = settings.model_copy(
        update={"auth_leeway": 0.0, "events_recheck_seconds": 0.05, "rate_limit_user": 0}
    )
    async with gateway(strict) as gw:
        short = issue_token(JWT_SECRET, "alice", ttl_s=1)
        resp = await gw.client.get("/v1/events", headers={"Authorization": f"Bearer {short}"})
        assert await SseReader(resp).ended(timeout=20)
        key, secret = await create_key(gw.res.database, "app", ["photos:read"])
        headers = {"Authorization": f"Bearer {secret}", "X-Darkroom-User": "alice"}
        resp = await gw.client.get("/v1/events", headers=headers)
        sse = SseReader(resp)
        mark = await marker(gw, "alice")
        assert (await sse.message()).json()["data"]["photo_id"] == mark
        assert await revoke_key(gw.res.database, key.id)
        assert await sse.ended(timeout=20)


async def test_a_browser_on_an_allowed_origin_may_read_the_stream(settings: Settings) -> None:
    cors = settings.model_copy(update={"cors_origins": "https://app.example"})
    async with gateway(cors) as gw:
        preflight = await gw.client.options(
            "/v1/events",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
        )
        assert "Last-Event-ID" in preflight.headers["Access-Control-Allow-Headers"]
        headers = gw.auth() | {"Origin": "https://app.example"}
        async with gw.client.get("/v1/events", headers=headers) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "X-Request-ID" in resp.headers["Access-Control-Expose-Headers"]
            assert resp.headers["Vary"] == "Origin"
