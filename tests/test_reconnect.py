"""A worker survives losing its RabbitMQ connection: readiness drops, publishes fail fast
instead of hanging, and the consumer is restored once the broker is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from chaos.tcp_proxy import TcpProxy
from shared.broker import open_broker
from shared.db import open_database
from shared.errors import BrokerUnavailable, DatabaseUnavailable
from shared.events import Envelope, PhotoRejected
from shared.runtime import Meta, on_events
from shared.settings import Settings
from shared.storage import open_storage
from shared.store import Store
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port, worker


async def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for a state the client library exposes no event for."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (channel state has no event to await)
            await asyncio.sleep(0.02)


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def publish_directly(url: str, topology: Topology, photo_id: str) -> None:
    body = Envelope.wrap(
        PhotoRejected(photo_id=photo_id, owner_id="u", reason="empty", detail=""),
        trace_id="t",
    ).to_bytes()
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.events_exchange)
        await exchange.publish(aio_pika.Message(body), routing_key="photo.rejected")


async def test_consumer_and_publisher_recover_from_a_cut_connection(
    settings: Settings, amqp_url: str, proxy: TcpProxy
) -> None:
    settings = settings.model_copy(
        update={"broker_url": through(amqp_url, proxy), "publish_timeout": 1.0}
    )
    topology = Topology.from_settings(settings)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        handled.put_nowait(event.photo_id)

    try:
        async with open_broker(settings) as broker:
            route = on_events(topology.notifier, {PhotoRejected: handler})
            consumer = worker(broker, topology, route)
            await consumer.start()
            await publish_directly(amqp_url, topology, "before")
            assert await asyncio.wait_for(handled.get(), 10) == "before"

            proxy.refusing = True
            proxy.cut()
            await until(lambda: not broker.is_ready)
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(
                    broker.publish(topology.events_exchange, "photo.rejected", b"{}"), 5
                )

            proxy.refusing = False
            await until(lambda: broker.is_ready)
            await publish_directly(amqp_url, topology, "after")
            assert await asyncio.wait_for(handled.get(), 20) == "after"
            await consumer.drain()
    finally:
        await delete_topology(amqp_url, topology)


async def test_store_recovers_after_the_database_connection_is_cut(
    settings: Settings, postgres_url: str
) -> None:
    """Readiness drops while PostgreSQL is unreachable and returns after, in one process."""
    parts = urlsplit(postgres_url)
    pg = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await pg.start()
    proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{pg.port}"))
    cut_off = settings.model_copy(update={"database_url": proxied, "database_timeout": 2.0})
    try:
        async with open_database(cut_off) as db:
            store = Store(db)
            assert await db.ping()
            pg.refusing = True
            pg.cut()
            assert not await db.ping()
            missing = uuid.uuid4().hex
            with pytest.raises(DatabaseUnavailable):
                await store.get(missing)
            pg.refusing = False
            assert await db.ping()
            assert await store.get(missing) is None
    finally:
        await pg.close()


async def test_an_ack_on_a_dead_channel_means_redelivery_not_a_crash(
    settings: Settings, amqp_url: str, proxy: TcpProxy
) -> None:
    """The handler finishes while the connection is gone: its ack cannot reach the
    broker, the worker carries on, and the message comes back and is handled again."""
    settings = settings.model_copy(update={"broker_url": through(amqp_url, proxy)})
    topology = Topology.from_settings(settings)
    started, release = asyncio.Event(), asyncio.Event()
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        seen.put_nowait(event.photo_id)
        started.set()
        await release.wait()

    try:
        async with open_broker(settings) as broker:
            consumer = worker(
                broker, topology, on_events(topology.notifier, {PhotoRejected: handler})
            )
            await consumer.start()
            await publish_directly(amqp_url, topology, "once")
            await asyncio.wait_for(started.wait(), 10)
            proxy.cut()
            await until(lambda: not broker.is_ready)
            release.set()  # finishes on a dead channel: the ack is lost, not raised
            assert await asyncio.wait_for(seen.get(), 5) == "once"
            assert await asyncio.wait_for(seen.get(), 20) == "once"  # redelivered
            await consumer.drain()
    finally:
        await delete_topology(amqp_url, topology)


@pytest.mark.slow  # the unreachable endpoint is retried with backoff: seconds
async def test_storage_ping_tells_whether_storage_answers(settings: Settings) -> None:
    async with open_storage(settings) as storage:
        assert await storage.ping()  # 404, no such bucket: an answer, so not an outage
        await storage.ensure_bucket()
        assert await storage.ping()
    nowhere = settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "s3_timeout": 2.0}
    )
    async with open_storage(nowhere) as storage:
        assert not await storage.ping()


async def test_a_message_held_through_an_outage_is_dropped_when_its_connection_goes(
    settings: Settings, amqp_url: str, proxy: TcpProxy
) -> None:
    """The broker hands it out again on the new connection; the old copy must not also
    run once the database is back, or the work would be done twice."""
    settings = settings.model_copy(update={"broker_url": through(amqp_url, proxy)})
    topology = Topology.from_settings(settings)
    database_down, held_twice = True, asyncio.Event()
    attempts: list[str] = []
    done: asyncio.Queue[str] = asyncio.Queue()

    async def database_up() -> bool:
        return not database_down

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        attempts.append(event.photo_id)
        if database_down:
            if len(attempts) == 2:
                held_twice.set()
            raise DatabaseUnavailable("refused")
        done.put_nowait(event.photo_id)

    try:
        async with open_broker(settings) as broker:
            route = on_events(topology.notifier, {PhotoRejected: handler})
            consumer = worker(
                broker,
                topology,
                route,
                outages={DatabaseUnavailable: database_up},
                probe_interval=0.02,
            )
            await consumer.start()
            await publish_directly(amqp_url, topology, "held")
            await until(lambda: len(attempts) == 1)
            proxy.cut()  # the held delivery's channel dies; RabbitMQ requeues the message
            await asyncio.wait_for(held_twice.wait(), 20)  # redelivered, and held again
            database_down = False
            assert await asyncio.wait_for(done.get(), 10) == "held"
            await consumer.drain()
        assert done.empty() and attempts == ["held"] * 3
    finally:
        await delete_topology(amqp_url, topology)
