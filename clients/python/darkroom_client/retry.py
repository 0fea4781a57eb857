"""When and how long to wait before trying again.

Retried: 429 (after `Retry-After` when the server sends one), 502/503/504 and network
errors; backoff is exponential with jitter, so clients that failed together do not come
back together."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRIED_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in all (the first included); delays double from `base` up to `cap`
    seconds. A `Retry-After` longer than `max_retry_after` is not waited for: the error
    is raised instead. `sleep` is replaceable (tests record the delays)."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    max_retry_after: float = 300.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None when
        it was the last one or the server asks for more than we wait."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        return self.wait(attempt, retry_after)

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """The delay after failure number `attempt`, however many came before."""
        if retry_after is not None:
            # The server's time, plus a little spread so its callers do not return at once.
            return retry_after + random.uniform(0, self.base)
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
