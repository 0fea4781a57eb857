"""An in-process broker with RabbitMQ's semantics, for `darkroom dev` and fast unit tests.

Topic routing, mandatory publishes (unroutable raises), a prefetch window per consumer,
delivery limits, delayed retries and dead-letter queues all behave like the real
topology. Nothing survives the process: this is a stand-in, not a store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from shared.topology import QueueSpec, Topology


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


@dataclass
class _Queue:
    name: str
    delivery_limit: int | None = None
    dead_letter_exchange: str | None = None
    items: asyncio.Queue[tuple[Message, int]] = field(default_factory=asyncio.Queue)
    unsettled: int = 0
    delayed: int = 0  # waiting out a retry delay


class MemoryBroker:
    def __init__(self, *, delivery_limit: int = 20, prefetch: int = 16) -> None:
        self._delivery_limit = delivery_limit
        self._prefetch = prefetch
        self._exchanges: dict[str, str] = {"": "direct"}
        self._bindings: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._queues: dict[str, _Queue] = {}
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def is_ready(self) -> bool:
        return not self._closed

    async def declare(self, topology: Topology) -> None:
        for name in (topology.events_exchange, topology.storage_exchange):
            self._exchanges[name] = "topic"
        self._exchanges[topology.dead_letter_exchange] = "direct"
        for spec in topology.all_queues():
            self._queues.setdefault(
                spec.name, _Queue(spec.name, self._delivery_limit, spec.dead_letter_exchange)
            )
            for key in spec.routing_keys:
                self._bind(spec.exchange, key, spec.name)
            self._queues.setdefault(spec.dead_letter_queue, _Queue(spec.dead_letter_queue))
            self._bind(spec.dead_letter_exchange, spec.name, spec.dead_letter_queue)

    def _bind(self, exchange: str, key: str, queue: str) -> None:
        if (key, queue) not in self._bindings[exchange]:
            self._bindings[exchange].append((key, queue))

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
        self._check_open()
        message = Message(body, routing_key, dict(headers or {}), message_id, content_type)
        targets = self._route(exchange, routing_key)
        if not targets:
            raise BrokerUnavailable(f"broker could not route {exchange}/{routing_key}")
        for queue in targets:
            queue.items.put_nowait((message, 0))

    def _route(self, exchange: str, routing_key: str) -> list[_Queue]:
        if exchange not in self._exchanges:
            raise BrokerUnavailable(f"no exchange {exchange!r}")
        if exchange == "":
            queue = self._queues.get(routing_key)
            return [queue] if queue else []
        names = {
            q
            for key, q in self._bindings[exchange]
            if (
                key == routing_key
                if self._exchanges[exchange] == "direct"
                else topic_matches(key, routing_key)
            )
        }
        return [self._queues[n] for n in sorted(names)]

    async def consume(self, queue: QueueSpec, on_delivery: OnDelivery) -> _Subscription:
        window = queue.prefetch or self._prefetch
        subscription = _Subscription(self, self._queues[queue.name], on_delivery, window)
        subscription.start()
        return subscription

    async def listen(
        self, queue: QueueSpec, on_delivery: OnDelivery, on_gap: OnGap | None = None
    ) -> _Subscription:
        """Nothing is ever lost in between here: `on_gap` is never called."""
        self._check_open()
        own = self._queues.setdefault(queue.name, _Queue(queue.name))
        for key in queue.routing_keys:
            self._bind(queue.exchange, key, queue.name)

        def forget() -> None:
            self._queues.pop(queue.name, None)
            for bindings in self._bindings.values():
                bindings[:] = [b for b in bindings if b[1] != queue.name]

        subscription = _Subscription(self, own, on_delivery, self._prefetch, on_cancel=forget)
        subscription.start()
        return subscription

    def outstanding(self, queue: QueueSpec) -> int:
        """Messages queued or handed out and not yet settled (RabbitMQ's ready + unacked)."""
        q = self._queues[queue.name]
        return q.items.qsize() + q.unsettled

    async def backlog(self, queue: QueueSpec, retry_delays_ms: Sequence[int]) -> Backlog:
        self._check_open()
        q = self._queues[queue.name]
        parked = self._queues[queue.dead_letter_queue].items.qsize()
        return Backlog(ready=q.items.qsize(), dead_letters=parked, retrying=q.delayed)

    def dead_letters(self, queue: QueueSpec) -> list[Message]:
        """What a dead-letter queue holds now, for tools and tests (not consumed)."""
        items = self._queues[queue.dead_letter_queue].items
        return [msg for msg, _ in items._queue]  # type: ignore[attr-defined]

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("broker is closed")

    def requeue_later(self, queue: _Queue, message: Message, delay_ms: int) -> None:
        self._check_open()
        loop = asyncio.get_running_loop()
        queue.delayed += 1

        def due() -> None:
            queue.delayed -= 1
            queue.items.put_nowait((message, 0))

        loop.call_later(delay_ms / 1000, due)

    def redeliver(self, queue: _Queue, message: Message, deliveries: int) -> None:
        if queue.delivery_limit is not None and deliveries >= queue.delivery_limit:
            self.park(queue, message, "delivery_limit")
        else:
            queue.items.put_nowait((message, deliveries))

    def park(self, queue: _Queue, message: Message, reason: str) -> None:
        self._check_open()
        if queue.dead_letter_exchange is None:
            raise BrokerUnavailable(f"{queue.name} has no dead-letter queue")
        parked = message.with_headers(
            **{
                REASON_HEADER: reason,
                QUEUE_HEADER: queue.name,
                ROUTING_KEY_HEADER: message.routing_key,
            }
        )
        for target in self._route(queue.dead_letter_exchange, queue.name):
            target.items.put_nowait((parked, 0))

    async def close(self) -> None:
        self._closed = True


class _Subscription:
    def __init__(
        self,
        broker: MemoryBroker,
        queue: _Queue,
        on_delivery: OnDelivery,
        window: int,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._on_delivery = on_delivery
        self._on_cancel = on_cancel
        self._window = asyncio.Semaphore(window)
        self._pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._pump = asyncio.create_task(self._run(), name=f"memory-consumer:{self._queue.name}")

    async def _run(self) -> None:
        while True:
            await self._window.acquire()
            message, deliveries = await self._queue.items.get()
            self._queue.unsettled += 1
            delivery = _MemoryDelivery(
                self._broker, self._queue, message, deliveries + 1, self._window.release
            )
            task = asyncio.create_task(self._on_delivery(delivery))
            self._broker._tasks.add(task)
            task.add_done_callback(self._broker._tasks.discard)

    async def cancel(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._on_cancel is not None:
            self._on_cancel()


class _MemoryDelivery:
    def __init__(
        self,
        broker: MemoryBroker,
        queue: _Queue,
        message: Message,
        deliveries: int,
        release: Any,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self.message = message
        self._deliveries = deliveries
        self._release = release
        self._settled = False

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery settled twice")
        self._settled = True
        self._queue.unsettled -= 1
        self._release()

    async def ack(self) -> None:
        self._settle()

    async def requeue(self) -> None:
        self._settle()
        self._broker.redeliver(self._queue, self.message, self._deliveries)

    async def retry(self, delay_ms: int, reason: str) -> None:
        retried = self.message.with_headers(
            **{ATTEMPT_HEADER: self.message.attempt + 1, REASON_HEADER: reason}
        )
        self._broker.requeue_later(self._queue, retried, delay_ms)
        self._settle()

    async def dead_letter(self, reason: str) -> None:
        self._broker.park(self._queue, self.message, reason)
        self._settle()
