"""Each service's broker user, on the real RabbitMQ: it starts with the rights
shared/broker_access.py gives it, and is refused what it should not do.

The users are created from the same definitions document `make env` writes, for a
topology of this module's own, which the administrator declares first.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from shared.broker import Delivery, open_broker
from shared.broker_access import ADMIN, accounts, definitions
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import (
    AMQP_URL,
    _in_thread,
    delete_topology,
    make_settings,
    require_server,
    require_tool,
)

Users = dict[str, str]
Broker = tuple[Settings, Topology, Users]
pytestmark = pytest.mark.rabbitmq


def rabbitmqctl(*args: str) -> None:
    ctl = require_tool("rabbitmqctl", "broker users cannot be created")
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


async def declare(settings: Settings) -> None:
    async with open_broker(settings.model_copy(update={"broker_declare": True})):
        pass


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """The module's topology, declared as `darkroom broker declare` does, and its service
    accounts (the administrator stays the broker's own)."""
    require_server("RabbitMQ", AMQP_URL)
    settings = make_settings(broker_url=AMQP_URL, topology_prefix=f"acl-{uuid.uuid4().hex[:8]}")
    topology = Topology.from_settings(settings)
    # Hex: a password starting with "-" would be read by rabbitmqctl as an option.
    passwords = {name: secrets.token_hex(16) for name in [ADMIN, *accounts(topology)]}
    doc = definitions(topology, passwords)
    users = [u["name"] for u in doc["users"] if u["name"] != ADMIN]
    created: list[str] = []
    try:
        for user in doc["users"]:
            if user["name"] == ADMIN:
                continue
            rabbitmqctl("add_user", user["name"], passwords[user["name"]])
            created.append(user["name"])
            if user["tags"]:
                rabbitmqctl("set_user_tags", user["name"], *user["tags"])
        for grant in doc["permissions"]:
            if grant["user"] != ADMIN:
                rabbitmqctl("set_permissions", "-p", grant["vhost"], grant["user"],
                            grant["configure"], grant["write"], grant["read"])  # fmt: skip
        for topic in doc["topic_permissions"]:
            rabbitmqctl("set_topic_permissions", "-p", topic["vhost"], topic["user"],
                        topic["exchange"], topic["write"], topic["read"])  # fmt: skip
        _in_thread(declare(settings))
        yield settings, topology, {name: passwords[name] for name in users}
    finally:
        _in_thread(delete_topology(AMQP_URL, topology))
        for name in created:
            rabbitmqctl("delete_user", name)


def url_for(settings: Settings, user: str, password: str) -> str:
    parts = urlsplit(settings.broker_url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))


def login(broker: Broker, service: str) -> str:
    settings, topology, users = broker
    [name] = [n for n in accounts(topology) if n.endswith(f"-{service}")]
    return url_for(settings, name, users[name])


async def publish(url: str, exchange: str, routing_key: str) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)
    finally:
        await connection.close()


async def test_every_service_starts_with_its_own_user_and_declares_nothing(
    broker: Broker,
) -> None:
    settings = broker[0]
    for service in ("gateway", "ingest-worker", "thumbnail-worker", "notifier"):
        own = settings.model_copy(
            update={"broker_url": login(broker, service), "broker_declare": False}
        )
        async with open_broker(own) as connected:
            assert connected.is_ready, service


async def test_the_storage_user_may_publish_to_the_storage_exchange_only(broker: Broker) -> None:
    topology = broker[1]
    url = login(broker, "storage")
    await publish(url, topology.storage_exchange, "minio.object-created")
    for forbidden in (topology.events_exchange, topology.dead_letter_exchange, ""):
        with pytest.raises(ChannelAccessRefused):
            await publish(url, forbidden, topology.thumbnail.name)


async def test_the_notifier_announces_reveals_but_no_photo_and_nobody_writes_the_default_exchange(
    broker: Broker,
) -> None:
    settings, topology, users = broker
    url = login(broker, "notifier")
    for spec in (topology.notifier, topology.mail):
        await publish(url, spec.retry_exchange, spec.retry_queue(spec.retry.delays_ms()[0]))
    hooks = topology.webhooks
    await publish(url, hooks.retry_exchange, hooks.retry_queue(hooks.retry.delays_ms()[0]))
    for allowed in ("album.revealed", "webhook.delivery", "webhook.disabled", "mail.requested"):
        await publish(url, topology.events_exchange, allowed)
    for event in (
        "photo.ready",
        "album.revealed.x",
        "account.deleted",
        "webhook.test",
        "user.created",
    ):
        with pytest.raises(ChannelAccessRefused):
            await publish(url, topology.events_exchange, event)
    for name, password in users.items():
        with pytest.raises(ChannelAccessRefused):
            await publish(url_for(settings, name, password), "", topology.thumbnail.name)


async def test_a_service_cannot_consume_another_services_queue(broker: Broker) -> None:
    topology = broker[1]
    connection = await aio_pika.connect(login(broker, "gateway"))
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.thumbnail.name, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await queue.get(fail=False)
    finally:
        await connection.close()


async def test_the_gateway_listens_on_a_live_queue_of_its_own_and_declares_nothing_else(
    broker: Broker,
) -> None:
    settings, topology, _ = broker
    own = settings.model_copy(
        update={"broker_url": login(broker, "gateway"), "broker_declare": False}
    )
    received: asyncio.Queue[str] = asyncio.Queue()

    async def on_delivery(delivery: Delivery) -> None:
        received.put_nowait(delivery.message.routing_key)
        await delivery.ack()

    async with open_broker(own) as connected:
        subscription = await connected.listen(topology.live_events("0123abcd"), on_delivery)
        await publish(login(broker, "gateway"), topology.events_exchange, "photo.deleted")
        assert await asyncio.wait_for(received.get(), 10) == "photo.deleted"
        await subscription.cancel()
    connection = await aio_pika.connect(login(broker, "gateway"))
    try:
        for name in (f"{topology.live_events_prefix}x", f"{topology.thumbnail.name}.live"):
            channel = await connection.channel()
            with pytest.raises(ChannelAccessRefused):
                await channel.declare_queue(name, exclusive=True, auto_delete=True)
    finally:
        await connection.close()
