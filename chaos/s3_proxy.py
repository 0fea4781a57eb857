"""An HTTP reverse proxy in front of moto that makes storage unreliable: some calls are
answered 503 SlowDown (before reaching moto, or after it acted, so the caller retries a
call that already took effect) and some are slowed down."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "proxy-connection",
}
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Unreliability:
    error_rate: float
    slow_rate: float
    slow_ms: int

    def calm(self) -> None:
        self.error_rate = self.slow_rate = 0.0


class FaultyS3Proxy:
    def __init__(
        self, upstream: str, faults: Unreliability, tally: Counter[str], rng: random.Random
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.url = ""
        self._tally = tally
        self._rng = rng
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._roll(self.faults.slow_rate):
            self._tally["s3_slow"] += 1
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * self.faults.slow_ms / 1000)
        if self._roll(self.faults.error_rate / 2):
            self._tally["s3_503_before"] += 1
            return _slow_down()
        try:
            response = await self._forward(request)
        except (ConnectionError, aiohttp.ClientError):
            # The caller went away (a SIGKILLed worker) or moto hung up: nothing to answer.
            return web.Response(status=502)
        if self._roll(self.faults.error_rate / 2):
            self._tally["s3_503_after"] += 1
            return _slow_down()
        return response

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with self._http.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD's Content-Length is the object's size: pass it on untouched.
                out["Content-Length"] = upstream.headers["Content-Length"]
                return web.Response(status=upstream.status, headers=out)
            return web.Response(status=upstream.status, headers=out, body=payload)


def _slow_down() -> web.Response:
    return web.Response(status=503, body=_SLOW_DOWN, content_type="application/xml")
