"""What every broker offers the services: confirmed publishes, and deliveries that end in one
of four outcomes. `RabbitBroker` (aio-pika) is the real one; `MemoryBroker` is the
in-process stand-in with the same semantics for `darkroom dev`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from shared.events import Envelope, Event
from shared.settings import Settings
from shared.topology import QueueSpec, Topology
from shared.tracing import inject, tracer

# Headers Darkroom sets on a message it retries or parks.
ATTEMPT_HEADER = "x-darkroom-attempt"
REASON_HEADER = "x-darkroom-reason"
QUEUE_HEADER = "x-darkroom-queue"
ROUTING_KEY_HEADER = "x-darkroom-routing-key"


@dataclass(frozen=True)
class Message:
    body: bytes
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    content_type: str | None = None

    @property
    def attempt(self) -> int:
        """1 on the first try; counts Darkroom's own retries, not broker redeliveries."""
        value = self.headers.get(ATTEMPT_HEADER, 1)
        return value if isinstance(value, int) and value >= 1 else 1

    def with_headers(self, **extra: Any) -> Message:
        return Message(
            self.body,
            self.routing_key,
            {**self.headers, **extra},
            self.message_id,
            self.content_type,
        )


class Delivery(Protocol):
    """One received message. Exactly one of the outcome methods is called per delivery."""

    @property
    def message(self) -> Message: ...

    async def ack(self) -> None:
        """Effects are durable: forget the message."""

    async def retry(self, delay_ms: int, reason: str) -> None:
        """Deliver it again after `delay_ms`, with its attempt counter raised."""

    async def dead_letter(self, reason: str) -> None:
        """Park it in the queue's dead-letter queue with `reason`."""

    async def requeue(self) -> None:
        """Give it back at once, untouched (shutting down before it finished)."""


OnDelivery = Callable[[Delivery], Coroutine[Any, Any, None]]
OnGap = Callable[[], None]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop receiving new deliveries; those already handed out stay ours to settle."""


@dataclass(frozen=True)
class Backlog:
    """Messages a consumer queue has not handed out yet, and those set aside from it."""

    ready: int
    dead_letters: int
    retrying: int


class Broker(Protocol):
    @property
    def is_ready(self) -> bool: ...

    async def backlog(self, queue: QueueSpec, retry_delays_ms: Sequence[int]) -> Backlog:
        """Depths for the metrics; raises BrokerUnavailable while the broker is away."""

    async def declare(self, topology: Topology) -> None:
        """Create every exchange, queue and binding; idempotent."""

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Return once the broker confirmed the message was routed to a queue and stored.

        Raises BrokerUnavailable on a timeout, a nack or an unroutable message.
        """

    async def consume(self, queue: QueueSpec, on_delivery: OnDelivery) -> Subscription: ...

    async def listen(
        self, queue: QueueSpec, on_delivery: OnDelivery, on_gap: OnGap | None = None
    ) -> Subscription:
        """Declare `queue` as this process's own and consume it: bound to its routing keys,
        deleted once it has no consumer (the process gone, or on cancel); no retries, no
        dead letters, and the oldest messages are dropped past a bound. For what only
        matters while the process runs (each gateway's live event streams). `on_gap` is
        called when messages may have been lost: the queue was declared anew after the
        connection came back."""

    async def close(self) -> None: ...


async def publish_envelope(broker: Broker, topology: Topology, envelope: Envelope) -> None:
    with tracer.start_as_current_span(
        f"{envelope.type} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.destination.name": topology.events_exchange},
    ):
        headers: dict[str, Any] = {}
        inject(headers)  # traceparent: the consumer's span continues this one
        await broker.publish(
            topology.events_exchange,
            envelope.type,
            envelope.to_bytes(),
            message_id=envelope.id,
            headers=headers,
        )


async def publish(
    broker: Broker,
    topology: Topology,
    event: Event,
    *,
    trace_id: str,
    event_id: str | None = None,
) -> Envelope:
    envelope = Envelope.wrap(event, trace_id=trace_id, event_id=event_id)
    await publish_envelope(broker, topology, envelope)
    return envelope


@asynccontextmanager
async def open_broker(settings: Settings, *, wait: bool = True) -> AsyncIterator[Broker]:
    """The broker the settings name, connected and with the topology declared. With
    `wait=False` a RabbitMQ broker connects in the background instead, and a service can
    start while it is away (publishes raise BrokerUnavailable until it is there)."""
    if not settings.broker_url:
        from shared.memory_broker import MemoryBroker

        broker: Broker = MemoryBroker(
            delivery_limit=settings.delivery_limit, prefetch=settings.prefetch
        )
    elif not wait:
        from shared.background_broker import BackgroundBroker

        background = BackgroundBroker(settings)
        background.start()
        broker = background
    else:
        from shared.rabbitmq import RabbitBroker

        broker = await RabbitBroker.connect(settings)
    try:
        if settings.broker_declare or not settings.broker_url:
            await broker.declare(Topology.from_settings(settings))
        yield broker
    finally:
        await broker.close()
