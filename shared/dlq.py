"""Dead-letter tooling for operators: see why messages were parked, send them back after a
fix, or drop them. Works on RabbitMQ (the in-process broker keeps nothing to inspect).

    darkroom dlq list                      every dead-letter queue and its depth
    darkroom dlq show QUEUE [--limit N]    parked messages with their reasons
    darkroom dlq replay QUEUE [--limit N]  back into QUEUE, attempts reset
    darkroom dlq purge QUEUE               drop them all

QUEUE is a consumer queue's name (`darkroom.thumbnail`) or its short name (`thumbnail`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.broker import ATTEMPT_HEADER, REASON_HEADER
from shared.errors import ConfigurationError
from shared.topology import QueueSpec, Topology


@dataclass(frozen=True)
class Parked:
    message_id: str | None
    reason: str
    routing_key: str
    body: str


def resolve(topology: Topology, name: str) -> QueueSpec:
    for spec in topology.all_queues():
        if name in (spec.name, spec.name.removeprefix(f"{topology.prefix}.")):
            return spec
    known = ", ".join(s.name for s in topology.all_queues())
    raise ConfigurationError(f"no consumer queue {name!r}; known queues: {known}")


def reason_of(headers: dict[str, Any]) -> str:
    """Darkroom's own reason, or RabbitMQ's (delivery limit, rejection, expiry)."""
    if REASON_HEADER in headers:
        return str(headers[REASON_HEADER])
    reason = headers.get("x-first-death-reason")
    if isinstance(reason, bytes):
        reason = reason.decode()
    return f"broker: {reason}" if reason else "unknown"


class DeadLetters:
    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self._channel = channel
        self._topology = topology

    @classmethod
    async def connect(cls, url: str, topology: Topology) -> tuple[Any, DeadLetters]:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        return connection, cls(channel, topology)

    async def depths(self) -> dict[str, int]:
        depths = {}
        for spec in self._topology.all_queues():
            queue = await self._channel.declare_queue(spec.dead_letter_queue, passive=True)
            depths[spec.dead_letter_queue] = int(queue.declaration_result.message_count or 0)
        return depths

    async def show(self, spec: QueueSpec, limit: int) -> list[Parked]:
        """Look without taking: every message fetched is handed back unacknowledged."""
        fetched = await self._fetch(spec, limit)
        try:
            return [_parked(m) for m in fetched]
        finally:
            for message in fetched:
                await message.nack(requeue=True)

    async def replay(self, spec: QueueSpec, limit: int) -> int:
        """Send parked messages back to their queue with a fresh attempt count; each is
        removed from the dead-letter queue only after the broker confirmed the copy."""
        replayed = 0
        for message in await self._fetch(spec, limit):
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if not k.startswith("x-death") and k not in (ATTEMPT_HEADER,)
            }
            headers["x-darkroom-replayed-from"] = reason_of(dict(message.headers or {}))[:500]
            copy = aio_pika.Message(
                message.body,
                headers=headers,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await self._channel.default_exchange.publish(copy, routing_key=spec.name)
            await message.ack()
            replayed += 1
        return replayed

    async def purge(self, spec: QueueSpec) -> int:
        queue = await self._channel.declare_queue(spec.dead_letter_queue, passive=True)
        result = await queue.purge()
        return int(result.message_count or 0)

    async def _fetch(self, spec: QueueSpec, limit: int) -> list[AbstractIncomingMessage]:
        queue = await self._channel.declare_queue(spec.dead_letter_queue, passive=True)
        fetched: list[AbstractIncomingMessage] = []
        while len(fetched) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            fetched.append(message)
        return fetched


def _parked(message: AbstractIncomingMessage) -> Parked:
    headers = dict(message.headers or {})
    try:
        body = json.dumps(json.loads(message.body), indent=2)
    except ValueError:
        body = message.body[:2000].decode(errors="replace")
    return Parked(
        message.message_id,
        reason_of(headers),
        str(headers.get("x-darkroom-routing-key", message.routing_key or "")),
        body,
    )
