"""SIGTERM while a worker process is mid-message: it stops taking work, finishes what it
holds within the grace period (`DARKROOM_SHUTDOWN_GRACE`), or gives it back to the queue
unacknowledged, and exits 0. Either way the photo ends ready, once.

The thumbnail worker runs as its own process; its storage calls go through a proxy that
holds the download of the original, so the test decides when the work in hand can end.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from chaos.fleet import ServiceProcess
from chaos.s3_proxy import FaultyS3Proxy, Unreliability
from services.gateway.auth import issue_token
from services.gateway.service import serve as gateway
from services.ingest_worker.service import serve as ingest
from services.notifier.service import serve as notifier
from shared.settings import Settings
from shared.topology import Topology
from tests import images
from tests.conftest import JWT_SECRET
from tests.harness import Client, WebhookReceiver, free_port, process_env, running, with_sqs

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]


class HeldOriginals(FaultyS3Proxy):
    """Storage that makes every download of an original wait until `release()`."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, Unreliability(0, 0, 0), Counter(), random.Random())
        self.holding = asyncio.Event()
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and "/originals/" in request.path:
            self.holding.set()
            await self._released.wait()
        return await super()._handle(request)


@asynccontextmanager
async def held_originals(upstream: str) -> AsyncIterator[HeldOriginals]:
    proxy = HeldOriginals(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.release()
        await proxy.close()


@asynccontextmanager
async def thumbnail_worker(
    settings: Settings, storage_url: str, grace: float, log: Path, http: aiohttp.ClientSession
) -> AsyncIterator[ServiceProcess]:
    """The worker as its own process, ready; killed at the end if the test left it up."""
    port = free_port()
    env = process_env(
        settings.model_copy(update={"s3_endpoint_url": storage_url}),
        DARKROOM_SHUTDOWN_GRACE=str(grace),
        DARKROOM_HEALTH_PORT=str(port),
    )
    service = ServiceProcess("thumbnail_worker", env, port, log)
    try:
        await service.start()
        await service.wait_ready(http)
        yield service
    finally:
        await service.kill()
        await service.stop()


def draining_one(log: Path) -> bool:
    """The worker logs `draining` with the count in flight once SIGTERM reached it."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return any(line["event"] == "draining" and line["in_flight"] == 1 for line in lines)


async def until_draining(log: Path, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not draining_one(log):  # noqa: ASYNC110 (another process's log: no event to await)
            await asyncio.sleep(0.05)


async def waiting_in_queue(settings: Settings) -> int:
    async with await aio_pika.connect(settings.broker_url) as connection:
        channel = await connection.channel()
        queue = Topology.from_settings(settings).thumbnail.name
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def exit_code(service: ServiceProcess, within: float) -> int:
    assert service.process is not None
    return await asyncio.wait_for(service.process.wait(), within)


async def start_photo(client: Client, photo: bytes) -> str:
    grant = await client.grant(photo, "image/jpeg")
    await client.upload(grant, photo, "image/jpeg")
    return str(grant["photo_id"])


async def test_sigterm_mid_render_finishes_the_photo_within_the_grace(
    real: Settings, hooks: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    real = await with_sqs(real, unique)
    log = tmp_path / "thumbnail_worker.log"
    async with (
        held_originals(real.s3_endpoint_url) as storage,
        running(real, [gateway, ingest, notifier]) as base,
        aiohttp.ClientSession() as http,
        thumbnail_worker(real, storage.url, 20, log, http) as thumbs,
    ):
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        photo_id = await start_photo(client, images.jpeg(1600, 1000))
        await asyncio.wait_for(storage.holding.wait(), 30)

        assert thumbs.process is not None
        thumbs.process.send_signal(signal.SIGTERM)
        await until_draining(log)
        storage.release()
        assert await exit_code(thumbs, within=30) == 0, log.read_text()[-3000:]

        ready = await hooks.wait_for(photo_id, "photo.ready")
        view = await client.photo(photo_id)
    assert view["status"] == "ready"
    assert {r["name"] for r in ready["data"]["renditions"]} == set(view["renditions"])
    assert await waiting_in_queue(real) == 0  # acked once done, not handed back


async def test_sigterm_mid_render_past_the_grace_hands_the_photo_back(
    real: Settings, hooks: WebhookReceiver, unique: str, tmp_path: Path
) -> None:
    real = await with_sqs(real, unique)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    async with (
        held_originals(real.s3_endpoint_url) as storage,
        running(real, [gateway, ingest, notifier]) as base,
        aiohttp.ClientSession() as http,
    ):
        client = Client(http, base, issue_token(JWT_SECRET, "bob"))
        async with thumbnail_worker(real, storage.url, 1.5, first_log, http) as thumbs:
            photo_id = await start_photo(client, images.jpeg(1600, 1000))
            await asyncio.wait_for(storage.holding.wait(), 30)
            assert thumbs.process is not None
            thumbs.process.send_signal(signal.SIGTERM)
            # Exits after the 1.5 s grace, far sooner than Kubernetes' 30 s would kill it.
            assert await exit_code(thumbs, within=15) == 0, first_log.read_text()[-3000:]
        assert await waiting_in_queue(real) == 1  # handed back, unacknowledged
        assert (await client.photo(photo_id))["status"] == "verified"

        storage.release()
        async with thumbnail_worker(real, storage.url, 1.5, second_log, http):
            await hooks.wait_for(photo_id, "photo.ready")
        view = await client.photo(photo_id)
    assert view["status"] == "ready"
    assert hooks.deliveries(photo_id, "photo.ready") == 1
