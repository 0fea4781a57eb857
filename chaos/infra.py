"""The run's own resources on the shared servers: a PostgreSQL database and the broker
topology under a unique prefix, both removed at the end, and a direct broker channel for
inspecting queues and publishing storage events as MinIO would."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from shared.rabbitmq import delete_topology
from shared.topology import QueueSpec, Topology

log = logging.getLogger("chaos")


async def _admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(sql, timeout=30)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """A new database for the run; dropped afterwards, whatever happened."""
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def broker_admin(amqp_url: str, topology: Topology) -> AsyncIterator[BrokerAdmin]:
    """A connection straight to the broker (never through the cut proxy); on the way out
    it deletes every queue and exchange with the run's prefix."""
    connection = await aio_pika.connect_robust(amqp_url, timeout=10)
    try:
        yield BrokerAdmin(connection, topology)
    finally:
        try:
            async with connection.channel() as channel:
                await delete_topology(channel, topology)
        finally:
            await connection.close()


class BrokerAdmin:
    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self.topology = topology

    async def ready_messages(self, spec: QueueSpec) -> int:
        """Messages waiting in a queue (not those a consumer holds)."""
        async with self._connection.channel() as channel:
            queue = await channel.declare_queue(spec.name, passive=True)
            count = queue.declaration_result.message_count
            return int(count or 0)

    async def publish_storage_event(self, body: bytes, routing_key: str) -> None:
        async with self._connection.channel(publisher_confirms=True) as channel:
            exchange = await channel.get_exchange(self.topology.storage_exchange)
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
                timeout=10,
            )
