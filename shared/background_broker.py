"""RabbitMQ for a service that may start before the broker is up: connects in the
background, so the process serves (health, or the API from its outbox) meanwhile."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from shared.broker import Backlog, OnDelivery, OnGap, Subscription
from shared.errors import BrokerUnavailable
from shared.logging import get_logger
from shared.rabbitmq import RabbitBroker
from shared.settings import Settings
from shared.topology import QueueSpec, Topology

log = get_logger(__name__)


class BackgroundBroker:
    """RabbitMQ for a service that starts while the broker may be away: it starts
    unconnected and connects, and declares the topology, in the background, retrying with
    capped, jittered exponential backoff until it can. The gateway serves meanwhile (its
    events wait in the outbox); a worker serves its health endpoints, not ready, and
    starts consuming once `wait_connected` returns. Once connected, aio-pika's robust
    connection takes over reconnecting."""

    def __init__(self, settings: Settings, retry_s: float = 0.5, max_retry_s: float = 15.0) -> None:
        self._settings = settings
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._inner: RabbitBroker | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def start(self) -> None:
        self._connecting = asyncio.create_task(self._connect())

    async def wait_connected(self) -> None:
        await self._ready.wait()

    async def _connect(self) -> None:
        topology = Topology.from_settings(self._settings)
        delay = self._retry_s
        while True:
            try:
                broker = await RabbitBroker.connect(self._settings)
                try:
                    if self._settings.broker_declare:
                        await broker.declare(topology)
                except CONNECTION_EXCEPTIONS as exc:
                    await broker.close()
                    raise BrokerUnavailable(f"broker lost while declaring: {exc!r}") from exc
            except BrokerUnavailable as exc:
                # Many replicas restarting together must not reconnect in lockstep.
                pause = delay * random.uniform(0.5, 1.0)
                log.warning("broker unreachable; will retry", error=str(exc), retry_s=pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._max_retry_s)
                continue
            self._inner = broker
            self._ready.set()
            log.info("broker connected")
            return

    def _connected(self) -> RabbitBroker:
        if self._inner is None:
            raise BrokerUnavailable("not connected to the broker yet")
        return self._inner

    @property
    def is_ready(self) -> bool:
        return self._inner is not None and self._inner.is_ready

    async def declare(self, topology: Topology) -> None:
        """Done on connecting."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        await self._connected().publish(
            exchange, routing_key, body, message_id=message_id, headers=headers
        )

    async def consume(self, queue: QueueSpec, on_delivery: OnDelivery) -> Subscription:
        return await self._connected().consume(queue, on_delivery)

    async def listen(
        self, queue: QueueSpec, on_delivery: OnDelivery, on_gap: OnGap | None = None
    ) -> Subscription:
        return await self._connected().listen(queue, on_delivery, on_gap)

    async def backlog(self, queue: QueueSpec, retry_delays_ms: Sequence[int]) -> Backlog:
        return await self._connected().backlog(queue, retry_delays_ms)

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._inner is not None:
            await self._inner.close()
