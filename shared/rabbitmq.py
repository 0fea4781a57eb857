"""The RabbitMQ broker on aio-pika: robust connection, confirmed mandatory publishes, quorum
queues with delivery limits, retry-by-TTL queues and explicit dead-lettering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ExchangeType,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError

from shared.broker import (
    ATTEMPT_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    Backlog,
    Message,
    OnDelivery,
    OnGap,
)
from shared.errors import BrokerUnavailable
from shared.logging import get_logger
from shared.settings import Settings
from shared.topology import QueueSpec, Topology

log = get_logger(__name__)

# Broker-side dead-lettering (a retry's expiry, the delivery limit) is at-most-once here.
# Quorum queues' at-least-once strategy would close that gap, but on RabbitMQ 3.10 it
# wedged the broker under queue churn in our tests; revisit on a newer broker. Darkroom's
# own parking (the reasons operators read) is a confirmed publish, so it loses nothing.
_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
# A process's own queue (`listen`) drops its oldest messages past this many.
LISTEN_MAX_LENGTH = 10_000
# ... and is deleted when no consumer has used it for this long.
LISTEN_EXPIRES_MS = 60_000


class RabbitBroker:
    def __init__(self, connection: AbstractRobustConnection, settings: Settings) -> None:
        self._connection = connection
        self._settings = settings
        self._publish_channel: AbstractChannel | None = None
        self._consume_channel: AbstractChannel | None = None
        self._inspect_channel: AbstractChannel | None = None

    @classmethod
    async def connect(cls, settings: Settings) -> RabbitBroker:
        try:
            connection = await aio_pika.connect_robust(
                settings.broker_url, timeout=settings.publish_timeout, reconnect_interval=1.0
            )
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from exc
        broker = cls(connection, settings)
        try:
            broker._publish_channel = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            broker._consume_channel = await connection.channel(publisher_confirms=False)
            await broker._consume_channel.set_qos(prefetch_count=settings.prefetch)
        except CONNECTION_EXCEPTIONS as exc:
            # A broker that accepts the socket and then resets it (a node still booting,
            # a proxy in front of one that is away) fails here, not in connect_robust.
            await connection.close()
            raise BrokerUnavailable(f"the broker dropped the connection: {exc!r}") from exc
        return broker

    @property
    def is_ready(self) -> bool:
        channels = (self._publish_channel, self._consume_channel)
        return (
            not self._connection.is_closed
            and self._connection.connected.is_set()
            and all(ch is not None and not ch.is_closed for ch in channels)
        )

    async def declare(self, topology: Topology) -> None:
        channel = self._channel("publish")
        for name, kind in (
            (topology.events_exchange, ExchangeType.TOPIC),
            (topology.storage_exchange, ExchangeType.TOPIC),
            (topology.dead_letter_exchange, ExchangeType.DIRECT),
        ):
            await channel.declare_exchange(name, kind, durable=True)
        for spec in topology.all_queues():
            await self._declare_queue(channel, topology, spec)

    async def _declare_queue(
        self, channel: AbstractChannel, topology: Topology, spec: QueueSpec
    ) -> None:
        queue = await channel.declare_queue(
            spec.name,
            durable=True,
            arguments={
                **_QUORUM,
                "x-delivery-limit": topology.delivery_limit,
                "x-dead-letter-exchange": spec.dead_letter_exchange,
                "x-dead-letter-routing-key": spec.name,
            },
        )
        for key in spec.routing_keys:
            await queue.bind(spec.exchange, key)
        dlq = await channel.declare_queue(spec.dead_letter_queue, durable=True, arguments=_QUORUM)
        await dlq.bind(spec.dead_letter_exchange, spec.name)
        retry = await channel.declare_exchange(
            spec.retry_exchange, ExchangeType.DIRECT, durable=True
        )
        for delay in spec.retry.delays_ms():
            retry_queue = await channel.declare_queue(
                spec.retry_queue(delay),
                durable=True,
                arguments={
                    "x-message-ttl": delay,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": spec.name,
                },
            )
            await retry_queue.bind(retry, retry_queue.name)

    async def backlog(self, queue: QueueSpec, retry_delays_ms: Sequence[int]) -> Backlog:
        """Ready counts by passive declares, on a channel of their own: a failed passive
        declare closes its channel, and must not take publishing or consuming with it."""
        try:
            if self._inspect_channel is None or self._inspect_channel.is_closed:
                self._inspect_channel = await self._connection.channel(publisher_confirms=False)
            channel = self._inspect_channel

            async def ready(name: str) -> int:
                declared = await channel.declare_queue(name, passive=True)
                return int(declared.declaration_result.message_count or 0)

            retrying = [await ready(queue.retry_queue(d)) for d in retry_delays_ms]
            return Backlog(
                ready=await ready(queue.name),
                dead_letters=await ready(queue.dead_letter_queue),
                retrying=sum(retrying),
            )
        except Exception as exc:
            raise BrokerUnavailable(f"cannot read queue depths: {exc!r}") from exc

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> None:
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            message_id=message_id,
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        channel = self._channel("publish")
        try:
            async with asyncio.timeout(self._settings.publish_timeout):
                target = (
                    channel.default_exchange
                    if exchange == ""
                    else await channel.get_exchange(exchange, ensure=False)
                )
                await target.publish(message, routing_key, mandatory=True)
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"no publisher confirm within {self._settings.publish_timeout}s"
            ) from exc
        except DeliveryError as exc:
            raise BrokerUnavailable(
                f"broker refused or could not route {exchange}/{routing_key}: {exc!r}"
            ) from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"publish failed: {exc!r}") from exc
        except Exception as exc:
            # aiormq fails a confirm pending when the connection drops with a bare
            # Exception; whatever the cause, the message was not confirmed.
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def consume(self, queue: QueueSpec, on_delivery: OnDelivery) -> _Subscription:
        channel = self._channel("consume")
        if queue.prefetch is not None and queue.prefetch != self._settings.prefetch:
            # A window of its own needs a channel of its own (prefetch is per channel).
            try:
                channel = await self._connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=queue.prefetch)
            except CONNECTION_EXCEPTIONS as exc:
                raise BrokerUnavailable(f"cannot open a channel: {exc!r}") from exc
        # A declared (here: passively) queue is tracked by the robust channel, which then
        # restores its consumer after a reconnect; one from get_queue(ensure=False) is not
        # (a known aio-pika behaviour, seen here as consumers silently gone after a restart).
        amqp_queue = await channel.declare_queue(queue.name, passive=True)

        async def callback(incoming: AbstractIncomingMessage) -> None:
            await on_delivery(_RabbitDelivery(self, queue, incoming))

        tag = await amqp_queue.consume(callback, no_ack=False)
        return _Subscription(amqp_queue, tag)

    async def listen(
        self, queue: QueueSpec, on_delivery: OnDelivery, on_gap: OnGap | None = None
    ) -> _Subscription:
        try:
            # Classic, auto-delete: gone with its last consumer, so a replica that dies
            # leaves nothing behind (x-expires: nor one that died before consuming). Not
            # exclusive: after a reconnect the robust channel declares it again, which an
            # exclusive queue refuses while the broker has not yet noticed the old
            # connection is dead (a half-open one can take a heartbeat timeout).
            amqp_queue = await self._channel("consume").declare_queue(
                queue.name,
                durable=False,
                auto_delete=True,
                arguments={
                    "x-max-length": LISTEN_MAX_LENGTH,
                    "x-overflow": "drop-head",
                    "x-expires": LISTEN_EXPIRES_MS,
                },
            )
            for key in queue.routing_keys:
                await amqp_queue.bind(queue.exchange, key)

            async def callback(incoming: AbstractIncomingMessage) -> None:
                await on_delivery(_RabbitDelivery(self, queue, incoming))

            tag = await amqp_queue.consume(callback, no_ack=False)
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"cannot listen on {queue.name}: {exc!r}") from exc
        if on_gap is None:
            return _Subscription(amqp_queue, tag)

        def reconnected(*_: Any) -> None:
            on_gap()

        # Called once the robust connection has restored its channels, queues included.
        callbacks = self._connection.reconnect_callbacks
        callbacks.add(reconnected)
        return _Subscription(amqp_queue, tag, lambda: callbacks.discard(reconnected))

    async def close(self) -> None:
        await self._connection.close()

    def _channel(self, which: str) -> AbstractChannel:
        channel = self._publish_channel if which == "publish" else self._consume_channel
        if channel is None:
            raise BrokerUnavailable("broker is not connected")
        return channel


class _Subscription:
    def __init__(
        self, queue: AbstractQueue, tag: str, on_cancel: Callable[[], None] | None = None
    ) -> None:
        self._queue = queue
        self._tag = tag
        self._on_cancel = on_cancel

    async def cancel(self) -> None:
        if self._on_cancel is not None:
            self._on_cancel()
        try:
            await self._queue.cancel(self._tag)
        except CONNECTION_EXCEPTIONS as exc:
            # Connection already gone: the broker has stopped delivering to this consumer.
            log.warning("consumer cancel failed", queue=self._queue.name, error=repr(exc))


class _RabbitDelivery:
    def __init__(
        self, broker: RabbitBroker, queue: QueueSpec, incoming: AbstractIncomingMessage
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._incoming = incoming
        self.message = Message(
            body=incoming.body,
            routing_key=incoming.routing_key or "",
            headers=dict(incoming.headers or {}),
            message_id=incoming.message_id,
            content_type=incoming.content_type,
        )

    async def ack(self) -> None:
        await self._settle(self._incoming.ack())

    async def requeue(self) -> None:
        await self._settle(self._incoming.nack(requeue=True))

    async def retry(self, delay_ms: int, reason: str) -> None:
        msg = self.message
        headers = {**msg.headers, ATTEMPT_HEADER: msg.attempt + 1, REASON_HEADER: reason[:1000]}
        # Publish the copy before acking the original: a crash in between duplicates the
        # message (handlers are idempotent) instead of losing it.
        await self._broker.publish(
            self._queue.retry_exchange,
            self._queue.retry_queue(delay_ms),
            msg.body,
            message_id=msg.message_id,
            headers=headers,
        )
        await self.ack()

    async def dead_letter(self, reason: str) -> None:
        msg = self.message
        headers = {
            **msg.headers,
            REASON_HEADER: reason[:1000],
            QUEUE_HEADER: self._queue.name,
            ROUTING_KEY_HEADER: msg.routing_key,
        }
        await self._broker.publish(
            self._queue.dead_letter_exchange,
            self._queue.name,
            msg.body,
            message_id=msg.message_id,
            headers=headers,
        )
        await self.ack()

    async def _settle(self, settle: Any) -> None:
        try:
            await settle
        except CONNECTION_EXCEPTIONS as exc:
            # The channel died under us; the broker requeues every unacked message of a
            # dead channel, so this one is redelivered and its idempotent handler re-run.
            log.warning("could not settle message; it will be redelivered", error=repr(exc))


async def delete_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Remove every queue and exchange `topology` declares: for runs with a throw-away
    prefix (tests, chaos), never for a live deployment's."""
    for name in topology.queue_names():
        await channel.queue_delete(name)
    for exchange in topology.exchange_names():
        await channel.exchange_delete(exchange)
