"""Request rate limits: GCRA (a token bucket kept as one timestamp per key).

Each key may make `per_minute` requests a minute, in bursts of up to as many. The state
lives in this process (`LocalLimiter`), or in Redis (`RedisLimiter`) so every gateway
replica draws on the same allowance; Redis's own clock is used, so replicas' clocks need
not agree. If Redis fails, each replica limits on its own for a while (`cooldown_s`),
then lets one request find out whether Redis is back while the others carry on locally:
an outage of the limiter should neither become an outage of the API nor leave it
unlimited, and a slow Redis should not add its timeout to every request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

PERIOD_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until a request would be allowed again


class RateLimiter(Protocol):
    async def hit(self, key: str, per_minute: int) -> Decision: ...

    async def peek(self, key: str, per_minute: int) -> Decision:
        """What `hit` would decide now, without spending anything: for limits on
        failures only (wrong passwords), checked before the attempt."""
        ...


ALLOWED = Decision(True)  # one instance: a frozen dataclass costs a microsecond to make


def gcra(tat: float, now: float, per_minute: int) -> tuple[Decision, float]:
    """The decision for one request, and the key's new theoretical arrival time.

    The test is `tat - now > PERIOD_S - interval` rather than the equivalent
    `tat + interval - now > PERIOD_S`: a clock reading just below a power of two makes
    `now + interval` round up, so with one request a minute (interval == PERIOD_S) a
    fresh key would be refused about one time in four.
    """
    interval = PERIOD_S / per_minute
    tat = max(tat, now)
    excess = (tat - now) - (PERIOD_S - interval)
    if excess > 0:
        return Decision(False, excess), tat
    return ALLOWED, tat + interval


class LocalLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._max_keys = max_keys
        self._tat: dict[str, float] = {}

    async def hit(self, key: str, per_minute: int) -> Decision:
        now = self._clock()
        decision, self._tat[key] = gcra(self._tat.get(key, now), now, per_minute)
        if len(self._tat) > self._max_keys:
            # Keys whose allowance is full again carry no information.
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return decision

    async def peek(self, key: str, per_minute: int) -> Decision:
        now = self._clock()
        return gcra(self._tat.get(key, now), now, per_minute)[0]


# KEYS[1]: the key; ARGV: interval, period. The same test as gcra(). Numbers go back as
# strings (Lua -> Redis conversion would truncate them to integers).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local excess = (tat - now) - (period - interval)
if excess > 0 then
  return {0, tostring(excess)}
end
local later = tat + interval
redis.call('SET', KEYS[1], tostring(later), 'PX', math.ceil((later - now) * 1000))
return {1, '0'}
"""


# The same test without the SET.
_PEEK_LUA = _GCRA_LUA.replace(
    "redis.call('SET', KEYS[1], tostring(later), 'PX', math.ceil((later - now) * 1000))\n", ""
)


class RedisLimiter:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_LUA)
        self._peek = redis.register_script(_PEEK_LUA)
        self._fallback = LocalLimiter(clock=clock)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failed = False  # Redis failed last time it was asked
        self._local_until = 0.0
        self._probing = False  # one request is finding out whether Redis is back

    async def hit(self, key: str, per_minute: int) -> Decision:
        return await self._run(self._script, self._fallback.hit, key, per_minute)

    async def peek(self, key: str, per_minute: int) -> Decision:
        return await self._run(self._peek, self._fallback.peek, key, per_minute)

    async def _run(
        self,
        script: Any,
        fallback: Callable[[str, int], Awaitable[Decision]],
        key: str,
        per_minute: int,
    ) -> Decision:
        if self._failed and (self._probing or self._clock() < self._local_until):
            return await fallback(key, per_minute)
        probe, self._probing = self._failed, self._failed
        try:
            allowed, retry_after = await script(
                keys=[self._redis_key(key)], args=[PERIOD_S / per_minute, PERIOD_S]
            )
        except (RedisError, OSError) as exc:
            self._failed, self._local_until = True, self._clock() + self._cooldown_s
            log.warning(
                "rate limiter unavailable; limiting per instance",
                error=str(exc),
                retry_redis_in_s=self._cooldown_s,
            )
            return await fallback(key, per_minute)
        finally:
            if probe:
                self._probing = False
        self._failed = False
        return ALLOWED if int(allowed) else Decision(False, float(retry_after))

    def _redis_key(self, key: str) -> str:
        # Hashed: user ids may be e-mail addresses, which have no business in Redis.
        return f"{self._prefix}:ratelimit:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def connect_redis(url: str, timeout_s: float = 2.0) -> Redis:
    """A client that fails after one timeout: the limiter falls back rather than retry
    (redis-py's default would retry three times, one timeout each)."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


@asynccontextmanager
async def open_limiter(settings: Settings) -> AsyncIterator[RateLimiter]:
    if not settings.redis_url:
        yield LocalLimiter()
        return
    redis = connect_redis(settings.redis_url)
    try:
        yield RedisLimiter(redis, settings.topology_prefix)
    finally:
        await redis.aclose()
