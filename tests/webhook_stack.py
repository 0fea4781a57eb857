"""A gateway and a notifier sharing resources, and local receivers for users' endpoints:
each answers as told (fail a few times, fail always, hang) and records what it got."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.notifier.service import serve as notifier
from shared.broker import publish
from shared.events import PhotoReady
from shared.facts import PhotoFacts
from shared.settings import Settings
from tests.gateway_harness import Gateway, gateway
from tests.harness import serve_local


@dataclass
class Hit:
    at: float  # loop time
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Endpoint:
    fail_first: int = 0
    fail_always: bool = False
    hang: bool = False
    hits: list[Hit] = field(default_factory=list)
    hanging: int = 0  # requests held open now
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def status(self) -> int:
        if self.fail_always:
            return 503
        if self.fail_first:
            self.fail_first -= 1
            return 503
        return 204

    async def wait(self, count: int, *, status: int | None = None, timeout: float = 30) -> None:
        """Until `count` requests (answered `status`, if given) have arrived."""

        def enough() -> bool:
            return len([h for h in self.hits if status in (None, h.status)]) >= count

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(enough), timeout)

    async def wait_hanging(self, count: int, timeout: float = 30) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self.hanging >= count), timeout)


@dataclass
class Receivers:
    base: str = ""
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, **behaviour: Any) -> tuple[str, Endpoint]:
        name = uuid.uuid4().hex[:8]
        self.endpoints[name] = Endpoint(**behaviour)
        return f"{self.base}/{name}", self.endpoints[name]

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = self.endpoints[request.match_info["name"]]
        body = await request.read()
        if endpoint.hang:
            async with endpoint._arrived:
                endpoint.hanging += 1
                endpoint._arrived.notify_all()
            with contextlib.suppress(asyncio.CancelledError):
                await self._release.wait()
            endpoint.hanging -= 1
        status = endpoint.status()
        loop = asyncio.get_running_loop()
        async with endpoint._arrived:
            endpoint.hits.append(Hit(loop.time(), dict(request.headers), body, status))
            endpoint._arrived.notify_all()
        return web.Response(status=status, text="nope" * 2000 if status >= 500 else "")

    def release(self) -> None:
        self._release.set()


@asynccontextmanager
async def receivers(host: str = "127.0.0.1") -> AsyncIterator[Receivers]:
    found = Receivers()
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    async with serve_local(app, host) as base:
        found.base = base
        try:
            yield found
        finally:
            found.release()


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway harness and a notifier on its resources, until the block ends."""
    async with gateway(settings) as gw:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier(settings, stop, resources=gw.res, health=False))
        try:
            yield gw
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def photo_ready(gw: Gateway, owner: str) -> str:
    """Publish a photo.ready of `owner`'s as the thumbnail worker would; its event id."""
    facts = PhotoFacts(sha256="0" * 64, placeholder="placeholder")
    event = PhotoReady(
        photo_id=uuid.uuid4().hex, owner_id=owner, width=1, height=1, renditions=(), facts=facts
    )
    envelope = await publish(gw.res.broker, gw.res.topology, event, trace_id="t")
    return envelope.id


async def register(
    gw: Gateway, url: str, user: str = "alice", events: tuple[str, ...] = ("*",)
) -> dict[str, Any]:
    body = {"url": url, "events": list(events)}
    async with gw.client.post("/v1/webhooks", json=body, headers=gw.auth(user)) as resp:
        assert resp.status == 201, await resp.text()
        made: dict[str, Any] = await resp.json()
        return made


async def deliveries(gw: Gateway, hook_id: str, user: str = "alice") -> list[dict[str, Any]]:
    path = f"/v1/webhooks/{hook_id}/deliveries"
    async with gw.client.get(path, headers=gw.auth(user)) as resp:
        assert resp.status == 200
        items: list[dict[str, Any]] = (await resp.json())["items"]
        return items
