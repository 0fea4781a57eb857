"""Quotas (bytes, photos, pending uploads) and rate limits (per user, per client IP; per
instance, and shared across instances through a real Redis)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from shared.events import Envelope, PhotoRejected
from shared.ratelimit import LocalLimiter, RedisLimiter, connect_redis
from shared.settings import Settings
from shared.store import PhotoStatus
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of
from tests.harness import free_port


async def grant(gw: Gateway, user: str = "alice", **body: Any) -> Any:
    return await gw.client.post("/v1/uploads", json=grant_body(**body), headers=gw.auth(user))


async def test_byte_quota_is_413_with_the_reason(settings: Settings) -> None:
    async with gateway(settings.model_copy(update={"quota_bytes": 200_000})) as gw:
        assert (await grant(gw, size=150_000)).status == 201
        body = await problem_of(await grant(gw, size=50_001), 413)
        assert body["code"] == "byte_quota_exceeded" and body["limit"] == 200_000
        assert "150000 used" in body["detail"]
        assert (await grant(gw, size=50_000)).status == 201, "exactly at the quota is fine"
        assert (await grant(gw, "bob", size=150_000)).status == 201, "quotas are per user"


async def test_photo_quota_is_409_and_rejected_photos_free_their_place(
    settings: Settings,
) -> None:
    async with gateway(settings.model_copy(update={"quota_photos": 2})) as gw:
        first = (await (await grant(gw)).json())["photo_id"]
        assert (await grant(gw)).status == 201
        body = await problem_of(await grant(gw), 409)
        assert body["code"] == "photo_quota_exceeded"
        event = PhotoRejected(photo_id=first, owner_id="alice", reason="corrupt", detail="x")
        envelope = Envelope.wrap(event, trace_id="t")
        await gw.res.store.mark_rejected(
            first, observed=PhotoStatus.PENDING, reason="corrupt", detail="x", envelope=envelope
        )
        assert (await grant(gw)).status == 201


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_concurrent_requests_cannot_overrun_a_quota(
    settings: Settings, database: str, request: pytest.FixtureRequest
) -> None:
    limits: dict[str, Any] = {"max_pending_uploads": 2, "quota_photos": 2}
    if database == "postgres":
        limits["database_url"] = request.getfixturevalue("postgres_url")
    async with gateway(settings.model_copy(update=limits)) as gw:
        answers = await asyncio.gather(*(grant(gw, "zoe") for _ in range(12)))
        assert sorted(a.status for a in answers) == [201, 201] + [409] * 10


async def test_pending_cap_is_409(settings: Settings) -> None:
    async with gateway(settings.model_copy(update={"max_pending_uploads": 1})) as gw:
        assert (await grant(gw)).status == 201
        body = await problem_of(await grant(gw), 409)
        assert body["code"] == "too_many_pending" and "pending" in body["detail"]


async def test_user_rate_limit_is_429_with_retry_after(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_user": 3, "rate_limit_ip": 0})
    async with gateway(limited) as gw:
        for _ in range(3):
            assert (await gw.client.get("/v1/photos", headers=gw.auth())).status == 200
        resp = await gw.client.get("/v1/photos", headers=gw.auth())
        body = await problem_of(resp, 429)
        assert body["code"] == "rate_limited" and "user" in body["detail"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 20
        assert (await gw.client.get("/v1/photos", headers=gw.auth("bob"))).status == 200
        assert (await gw.client.get("/healthz")).status == 200, "health is never limited"


async def test_ip_rate_limit_counts_every_user_and_unauthenticated_calls(
    settings: Settings,
) -> None:
    limited = settings.model_copy(update={"rate_limit_user": 0, "rate_limit_ip": 3})
    async with gateway(limited) as gw:
        assert (await gw.client.get("/v1/photos")).status == 401
        for user in ("a", "b"):
            assert (await gw.client.get("/v1/photos", headers=gw.auth(user))).status == 200
        resp = await gw.client.get("/v1/photos", headers=gw.auth("c"))
        assert "client IP" in (await problem_of(resp, 429))["detail"]


async def test_trusted_proxy_hops_pick_the_client_address(settings: Settings) -> None:
    limited = settings.model_copy(
        update={"rate_limit_user": 0, "rate_limit_ip": 1, "trusted_proxies": 1}
    )
    async with gateway(limited) as gw:

        async def status(forwarded: str) -> int:
            headers = gw.auth() | {"X-Forwarded-For": forwarded}
            return (await gw.client.get("/v1/photos", headers=headers)).status

        assert await status("10.0.0.1") == 200
        assert await status("10.0.0.2") == 200
        # A client's own X-Forwarded-For entries are left of the proxy's: not trusted.
        assert await status("6.6.6.6, 10.0.0.1") == 429


async def test_gcra_allows_a_burst_then_one_request_per_interval() -> None:
    now = [0.0]
    limiter = LocalLimiter(clock=lambda: now[0])
    assert [(await limiter.hit("k", 3)).allowed for _ in range(4)] == [True] * 3 + [False]
    denied = await limiter.hit("k", 3)
    assert denied.retry_after == pytest.approx(20)
    now[0] += 20
    assert (await limiter.hit("k", 3)).allowed
    assert not (await limiter.hit("k", 3)).allowed


async def test_one_a_minute_admits_a_new_key_whatever_the_clock_reads() -> None:
    # Readings just below a power of two used to round `now + 60` up and refuse the
    # first request (how the trusted-proxy test failed on a recently booted machine).
    clocks = [2.0**k - d for k in range(9, 34) for d in (0.3, 7.7, 31.1, 59.9)]
    for reading in clocks:
        limiter = LocalLimiter(clock=functools.partial(float, reading))
        assert (await limiter.hit("k", 1)).allowed, f"refused at clock {reading}"
        assert not (await limiter.hit("k", 1)).allowed


async def test_peeking_spends_nothing_locally() -> None:
    limiter = LocalLimiter(clock=lambda: 0.0)
    assert [(await limiter.peek("k", 2)).allowed for _ in range(5)] == [True] * 5
    await limiter.hit("k", 2)
    await limiter.hit("k", 2)
    assert not (await limiter.peek("k", 2)).allowed


async def test_peeking_spends_nothing_in_redis(redis_url: str, unique: str) -> None:
    redis = connect_redis(redis_url)
    try:
        limiter = RedisLimiter(redis, f"test-{unique}")
        assert [(await limiter.peek("k", 2)).allowed for _ in range(5)] == [True] * 5
        assert [(await limiter.hit("k", 2)).allowed for _ in range(2)] == [True, True]
        refused = await limiter.peek("k", 2)
        assert not refused.allowed and refused.retry_after > 0
    finally:
        await redis.aclose()


async def test_redis_shares_the_allowance_between_instances(
    settings: Settings, redis_url: str, unique: str
) -> None:
    shared = settings.model_copy(
        update={"redis_url": redis_url, "rate_limit_user": 4, "rate_limit_ip": 0}
    )
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(gateway(shared))
        two = await stack.enter_async_context(gateway(shared))
        user = f"shared-{unique}"
        statuses = []
        for gw in (one, two, one, two, one, two):
            statuses.append((await gw.client.get("/v1/photos", headers=gw.auth(user))).status)
        assert statuses == [200, 200, 200, 200, 429, 429]


async def test_an_unreachable_redis_leaves_each_instance_limiting_on_its_own(
    settings: Settings,
) -> None:
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "rate_limit_user": 2}
    )
    async with gateway(dead) as gw:
        statuses = [(await gw.client.get("/v1/photos", headers=gw.auth())).status for _ in range(3)]
    assert statuses == [200, 200, 429]


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """Accepts connections and never answers, like a Redis that hangs; yields its port
    and a list that grows by one per connection."""
    connections: list[int] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connections
    finally:
        server.close()


async def test_a_hanging_redis_is_not_asked_again_for_every_request() -> None:
    async with silent_server() as (port, connections):
        redis = connect_redis(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        limiter = RedisLimiter(redis, "test", cooldown_s=60)
        decisions = [(await limiter.hit("alice", 2)).allowed for _ in range(4)]
        await redis.aclose()
    assert decisions == [True, True, False, False]  # limited by the instance meanwhile
    assert len(connections) == 1  # one try, one timeout, then Redis is left alone


async def test_after_the_cooldown_one_request_asks_redis_while_the_rest_go_on() -> None:
    now = [0.0]
    async with silent_server() as (port, connections):
        redis = connect_redis(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        limiter = RedisLimiter(redis, "test", cooldown_s=10, clock=lambda: now[0])
        await limiter.hit("alice", 60)
        now[0] += 11
        await asyncio.gather(*(limiter.hit(f"user-{i}", 60) for i in range(5)))
        await redis.aclose()
    assert len(connections) == 2  # the first failure, then one probe for all five
