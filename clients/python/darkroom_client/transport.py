"""HTTP with retries: to the API (bearer token, problem+json errors) and to storage
(presigned URLs, no token)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDictProxy

from darkroom_client.errors import DarkroomError, StorageError, Unavailable, error_for
from darkroom_client.retry import RETRIED_STATUSES, RetryPolicy, parse_retry_after

NETWORK_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


T = TypeVar("T")


class RetryNow(Exception):
    """Raised by an attempt that has mended what failed (asked for a fresh link, say):
    the next one starts at once, and counts as one. `error` is raised once attempts
    are spent."""

    def __init__(self, error: DarkroomError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any


class Transport:
    """One aiohttp session, the API's base URL and credential, and the retry policy."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        retry: RetryPolicy,
        user: str | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if user:  # API keys act for the user this names
            self.headers["X-Darkroom-User"] = user

    async def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        redirect: bool = True,
    ) -> Answer:
        """Call the API; a problem answer raises its typed error once retries are spent."""
        url = f"{self.base_url}{path}"

        async def once() -> Answer:
            async with self.session.request(
                method,
                url,
                json=json,
                params=params,
                headers=self.headers,
                allow_redirects=redirect,
            ) as resp:
                body = await _body(resp)
                if resp.status >= 400:
                    raise error_for(resp.status, body, _retry_after(resp))
                return Answer(resp.status, resp.headers, body)

        return await self.retrying(once)

    async def storage(
        self,
        method: str,
        url: str,
        body: Callable[[], Any],
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send `body()` (made afresh for each attempt) to a presigned storage URL."""

        async def once() -> Answer:
            async with self.session.request(
                method, url, data=body(), headers=dict(headers or {})
            ) as resp:
                text = await resp.text(errors="replace")
                if resp.status >= 400:
                    error = error_for(resp.status, text, _retry_after(resp))
                    if resp.status in RETRIED_STATUSES:
                        raise error
                    raise StorageError(text or f"HTTP {resp.status}", status=resp.status)
                return Answer(resp.status, resp.headers, text)

        return await self.retrying(once)

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt()` until it succeeds, retrying 429, 502-504 and network errors
        with the policy's backoff, and `RetryNow` at once."""
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except RetryNow as again:
                if self.retry.delay(tries) is None:
                    raise again.error from again
                continue
            except DarkroomError as exc:
                if exc.status not in RETRIED_STATUSES:
                    raise
                error: DarkroomError = exc
                wait = self.retry.delay(tries, exc.retry_after)
            except NETWORK_ERRORS as exc:
                error = Unavailable(f"network error: {exc!r}")
                wait = self.retry.delay(tries)
            if wait is None:
                raise error
            await self.retry.sleep(wait)


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    return parse_retry_after(resp.headers.get("Retry-After"))


async def _body(resp: aiohttp.ClientResponse) -> Any:
    data = await resp.read()
    if not data:
        return None
    if "json" in resp.content_type:
        return await resp.json(content_type=None)
    return data.decode(errors="replace")
