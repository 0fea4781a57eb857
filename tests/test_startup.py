"""A worker started while RabbitMQ refuses it starts anyway: live at once, not ready until
the broker answers, then consuming like any other; one that does not migrate does the same
while PostgreSQL refuses it."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from chaos.tcp_proxy import TcpProxy
from services.ingest_worker.service import serve as ingest
from shared.broker import open_broker, publish
from shared.db import open_database
from shared.events import PhotoDeleted
from shared.keys import original_key
from shared.settings import Settings
from shared.storage import open_storage
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port
from tests.test_reconnect import through

pytestmark = pytest.mark.timeout(120)


async def status_of(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url) as resp:
            return resp.status
    except aiohttp.ClientError:
        return None


async def until_status(http: aiohttp.ClientSession, url: str, status: int) -> None:
    """Poll like an orchestrator's probe: health has no event to await from outside."""
    async with asyncio.timeout(60):
        while await status_of(http, url) != status:  # noqa: ASYNC110 (probing from outside)
            await asyncio.sleep(0.05)


async def test_a_worker_started_while_the_broker_resets_connections_waits_then_consumes(
    settings: Settings, amqp_url: str, proxy: TcpProxy
) -> None:
    settings = settings.model_copy(
        update={
            "broker_url": through(amqp_url, proxy),
            "publish_timeout": 2.0,
            "health_port": free_port(),
        }
    )
    topology = Topology.from_settings(settings)
    health = f"http://127.0.0.1:{settings.health_port}"
    owner, photo_id = "ana", uuid.uuid4().hex
    key = original_key(owner, photo_id)
    proxy.refusing = True
    stop = asyncio.Event()
    worker = asyncio.create_task(ingest(settings, stop))
    try:
        async with aiohttp.ClientSession() as http, open_storage(settings) as storage:
            await until_status(http, f"{health}/healthz", 200)
            async with asyncio.timeout(60):
                while proxy.refused < 3:  # noqa: ASYNC110 (retries have no outside event)
                    await asyncio.sleep(0.05)
            assert not worker.done(), "the worker must not exit while the broker is away"
            async with http.get(f"{health}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["broker"] is False

            proxy.refusing = False
            await until_status(http, f"{health}/readyz", 200)

            await storage.ensure_bucket()
            await storage.put(key, b"left behind", content_type="image/jpeg")
            async with open_broker(settings.model_copy(update={"broker_url": amqp_url})) as b:
                await publish(
                    b, topology, PhotoDeleted(photo_id=photo_id, owner_id=owner), trace_id="t"
                )
            async with asyncio.timeout(30):
                while await storage.head(key) is not None:  # noqa: ASYNC110 (a purge has no event)
                    await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await delete_topology(amqp_url, topology)


async def test_a_worker_that_does_not_migrate_starts_while_postgresql_is_away(
    settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    """DARKROOM_MIGRATE_ON_START=false (compose, Kubernetes): live at once, not ready while
    the database refuses it, ready once it answers; never exits for it."""
    async with open_database(settings.model_copy(update={"database_url": postgres_url})):
        pass  # the deploy step's migration, done before
    parts = urlsplit(postgres_url)
    login = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    database = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await database.start()
    database.refusing = True
    settings = settings.model_copy(
        update={
            "broker_url": amqp_url,
            "database_url": urlunsplit(parts._replace(netloc=f"{login}127.0.0.1:{database.port}")),
            "migrate_on_start": False,
            "health_port": free_port(),
        }
    )
    health = f"http://127.0.0.1:{settings.health_port}"
    stop = asyncio.Event()
    worker = asyncio.create_task(ingest(settings, stop))
    try:
        async with aiohttp.ClientSession() as http:
            await until_status(http, f"{health}/healthz", 200)
            async with asyncio.timeout(60):
                while database.refused < 2:  # noqa: ASYNC110 (retries have no outside event)
                    await asyncio.sleep(0.05)
            async with http.get(f"{health}/readyz") as resp:
                checks = (await resp.json())["checks"]
                assert (resp.status, checks["database"], checks["broker"]) == (503, False, True)
            database.refusing = False
            await until_status(http, f"{health}/readyz", 200)
            assert not worker.done(), "the worker must not exit while the database is away"
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
        await database.close()
        await delete_topology(amqp_url, Topology.from_settings(settings))
