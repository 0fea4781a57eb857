"""The consumer runtime every worker runs on.

Handlers are plain coroutines taking one event model (or, for storage notifications, the
raw message) and raising from `shared.errors` when they cannot finish. The runtime turns
that into an outcome, so no handler ever touches ack, nack or reject:

    returned            -> ack (the handler's effects are durable by then)
    PermanentError      -> dead-letter with the reason
    DatabaseUnavailable -> if that server is down for everyone (its probe in `outages`
    StorageUnavailable     says so): hold the message, wait until the server is back, run
                           the handler again; no attempt is spent unless the hold passes
                           `max_hold`
    anything else       -> retry after the queue's retry policy's delay (shared.topology),
                           dead-letter once the attempts run out
    shutdown mid-flight -> requeue at once, for another replica

`Worker.run()` consumes until its stop event is set, then drains: it stops taking
deliveries and waits up to the grace period for those in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.broker import Broker, Delivery, Message, OnDelivery, Subscription
from shared.errors import BrokerUnavailable, PermanentError, TransientError
from shared.events import Envelope, Event
from shared.logging import get_logger, log_context
from shared.metrics import Metrics
from shared.topology import QueueSpec, Topology
from shared.tracing import consume_span, photo_span

log = get_logger(__name__)

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Meta:
    """What a handler may need to know about the message besides its payload."""

    event_id: str
    trace_id: str
    attempt: int


Probe = Callable[[], Awaitable[bool]]  # does this server answer?
EventHandler = Callable[[E, Meta], Awaitable[None]]
MessageHandler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    queue: QueueSpec
    handle: MessageHandler


def on_events(queue: QueueSpec, handlers: Mapping[type[Any], EventHandler[Any]]) -> Route:
    """A route decoding Darkroom envelopes and calling the handler for the event's model."""
    by_type = {model.TYPE: (model, handler) for model, handler in handlers.items()}

    async def handle(message: Message) -> None:
        envelope = Envelope.from_bytes(message.body)
        if envelope.type not in by_type:
            raise PermanentError(f"{queue.name} has no handler for {envelope.type} events")
        model, handler = by_type[envelope.type]
        photo_id = envelope.data.get("photo_id")
        with (
            log_context(
                trace_id=envelope.trace_id,
                event_id=envelope.id,
                event_type=envelope.type,
                photo_id=photo_id,
            ),
            photo_span(envelope.type, envelope.trace_id, photo_id)
            if isinstance(photo_id, str)
            else nullcontext(),
        ):
            event: Event = envelope.open(model)
            await handler(event, Meta(envelope.id, envelope.trace_id, message.attempt))

    return Route(queue, handle)


class Worker:
    def __init__(
        self,
        broker: Broker,
        topology: Topology,
        routes: Sequence[Route],
        *,
        metrics: Metrics,
        handler_timeout: float = 300.0,
        grace: float = 20.0,
        outages: Mapping[type[TransientError], Probe] | None = None,
        probe_interval: float = 0.5,
        max_hold: float = 600.0,
    ) -> None:
        self._broker = broker
        self._topology = topology
        self._routes = routes
        self._metrics = metrics
        self._handler_timeout = handler_timeout
        self._grace = grace
        self._outages = outages or {}
        self._probe_interval = probe_interval
        self._max_hold = max_hold
        self._subscriptions: list[Subscription] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._draining = False

    async def start(self) -> None:
        for route in self._routes:
            self._subscriptions.append(
                await self._broker.consume(route.queue, self._receiver(route))
            )
        log.info("consuming", queues=[r.queue.name for r in self._routes])

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.drain()

    async def drain(self) -> None:
        """Stop taking messages; wait for in-flight ones; requeue what outlives the grace."""
        self._draining = True
        for subscription in self._subscriptions:
            await subscription.cancel()
        self._subscriptions.clear()
        if self._in_flight:
            log.info("draining", in_flight=len(self._in_flight), grace_s=self._grace)
            _, late = await asyncio.wait(self._in_flight, timeout=self._grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _receiver(self, route: Route) -> OnDelivery:
        async def receive(delivery: Delivery) -> None:
            if self._draining:
                await delivery.requeue()
                return
            task = asyncio.current_task()
            assert task is not None
            self._in_flight.add(task)
            held = self._metrics.in_flight.labels(route.queue.name)
            held.inc()
            try:
                await self._process(route, delivery)
            except BrokerUnavailable as exc:
                # Retrying or parking means publishing a copy; that failed, so hand the
                # original back for redelivery (or, if the channel is gone too, the broker
                # redelivers it anyway). Either way it is not lost and not left unacked.
                pause = min(route.queue.retry.delay_ms(delivery.message.attempt), 5000)
                log.warning(
                    "could not settle message; requeueing it",
                    queue=route.queue.name,
                    error=str(exc),
                    pause_ms=pause,
                )
                # A pause, so a broker refusing copies is not hammered in a tight loop.
                await asyncio.sleep(pause / 1000)
                await delivery.requeue()
            finally:
                held.dec()
                self._in_flight.discard(task)

        return receive

    async def _process(self, route: Route, delivery: Delivery) -> None:
        started = time.perf_counter()
        try:
            with consume_span(route.queue.name, delivery.message.headers):
                await self._handle(route, delivery.message)
        except asyncio.CancelledError:
            await delivery.requeue()
            self._count(route, "requeued")
            raise
        except PermanentError as exc:
            log.warning("message parked", queue=route.queue.name, reason=str(exc))
            await delivery.dead_letter(f"{type(exc).__name__}: {exc}")
            self._count(route, "dead_lettered")
        except Exception as exc:
            await self._retry_or_park(route, delivery, exc)
        else:
            await delivery.ack()
            self._count(route, "acked")
        finally:
            self._metrics.handler_seconds.labels(route.queue.name).observe(
                time.perf_counter() - started
            )

    async def _handle(self, route: Route, message: Message) -> None:
        """Each run of the handler has the time limit; waiting out an outage has its own."""
        while True:
            try:
                async with asyncio.timeout(self._handler_timeout):
                    return await route.handle(message)
            except TransientError as exc:
                if not await self._outage_over(route, exc):
                    raise

    async def _outage_over(self, route: Route, exc: TransientError) -> bool:
        """Wait out an outage: True once the server that failed, found down, is back.
        False if it answers, so the failure was this message's own (a statement timeout,
        say) and costs an attempt, or if it stays down longer than `max_hold` (under
        RabbitMQ's consumer_timeout), so a long outage still spends attempts, slowly.
        Holding keeps the message's prefetch slot, so a worker takes no new work while the
        server is away. If the broker connection goes meanwhile, aio-pika cancels this
        task and the broker hands the message out again: it never runs twice."""
        probe = next((p for kind, p in self._outages.items() if isinstance(exc, kind)), None)
        if probe is None or await probe():
            return False
        log.warning("server down; holding message until it is back", server=exc.what)
        self._count(route, "held")
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._max_hold
        while not await probe():
            if loop.time() >= give_up_at:
                log.warning("server still down; retrying message as usual", server=exc.what)
                return False
            await asyncio.sleep(self._probe_interval)
        log.info("server back; handling held message again", server=exc.what)
        return True

    async def _retry_or_park(self, route: Route, delivery: Delivery, exc: Exception) -> None:
        attempt = delivery.message.attempt
        reason = f"{type(exc).__name__}: {exc}"
        policy = route.queue.retry
        if attempt >= policy.max_attempts:
            log.error(
                "message parked after retries",
                queue=route.queue.name,
                attempts=attempt,
                reason=reason,
            )
            await delivery.dead_letter(f"gave up after {attempt} attempts: {reason}")
            self._count(route, "dead_lettered")
            return
        delay = policy.delay_ms(attempt)
        log.warning(
            "message will be retried",
            queue=route.queue.name,
            attempt=attempt,
            delay_ms=delay,
            reason=reason,
            exc_info=not isinstance(exc, TransientError),
        )
        await delivery.retry(delay, reason)
        self._count(route, "retried")

    def _count(self, route: Route, outcome: str) -> None:
        self._metrics.messages.labels(route.queue.name, outcome).inc()
