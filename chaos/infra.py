"""A direct broker connection for inspecting queues and publishing storage events as MinIO
would. It talks straight to the run's own RabbitMQ node (never through the cut proxy) and
rides out the node's restarts: while the node is away every call fails fast with
`BrokerAway`, and the robust connection comes back on its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from shared.topology import QueueSpec, Topology

log = logging.getLogger("chaos")

CALL_TIMEOUT_S = 10.0
RECONNECT_INTERVAL_S = 1.0

# What a call may raise while the node is stopped, crashed or starting: aiormq's channel
# state errors are RuntimeErrors, its connection errors AMQPErrors.
_AWAY = (AMQPError, ConnectionError, OSError, RuntimeError, TimeoutError)


class BrokerAway(ConnectionError):
    """The node did not answer the call (it is restarting, or the connection is being
    restored)."""


@contextlib.asynccontextmanager
async def broker_admin(amqp_url: str, topology: Topology) -> AsyncIterator[BrokerAdmin]:
    """A robust connection straight to the node, closed at the end (the node is the run's
    own and is thrown away with everything on it)."""
    connection = await aio_pika.connect_robust(
        amqp_url, timeout=10, reconnect_interval=RECONNECT_INTERVAL_S
    )
    try:
        yield BrokerAdmin(connection, topology)
    finally:
        with contextlib.suppress(*_AWAY):
            await asyncio.wait_for(connection.close(), CALL_TIMEOUT_S)


class BrokerAdmin:
    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self.topology = topology

    async def ready_messages(self, spec: QueueSpec) -> int:
        """Messages waiting in a queue (not those a consumer holds); BrokerAway if the
        node does not say."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                async with self._connection.channel() as channel:
                    queue = await channel.declare_queue(spec.name, passive=True)
                    count = queue.declaration_result.message_count
                    return int(count or 0)
        except _AWAY as exc:
            raise BrokerAway(f"cannot inspect {spec.name}: {exc!r}") from exc

    async def publish_storage_event(self, body: bytes, routing_key: str) -> None:
        """Publish with a confirm; BrokerAway if the node did not confirm (the message
        may or may not have gone out)."""
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                async with self._connection.channel(publisher_confirms=True) as channel:
                    exchange = await channel.get_exchange(self.topology.storage_exchange)
                    await exchange.publish(
                        aio_pika.Message(
                            body,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=routing_key,
                    )
        except _AWAY as exc:
            raise BrokerAway(f"cannot publish a storage event: {exc!r}") from exc
