"""album.revealed fires exactly once per album, with two notifier processes racing for
every due album on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime

import aio_pika
import pytest

from shared.albums import AlbumRecord
from shared.events import Envelope
from shared.resources import open_resources
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port, process_env
from tests.test_processes import json_lines, start, wait_ready

ALBUMS = 12


@pytest.mark.processes
async def test_two_notifiers_reveal_each_album_exactly_once(
    settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    settings = settings.model_copy(update={"broker_url": amqp_url, "database_url": postgres_url})
    ports = [free_port(), free_port()]
    connection = await aio_pika.connect(amqp_url)
    try:
        async with open_resources(settings) as res:  # migrated, topology declared
            channel = await connection.channel()
            seen = await channel.declare_queue(exclusive=True)
            await seen.bind(res.topology.events_exchange, "album.revealed")
            notifiers = [
                await start(
                    "notifier",
                    process_env(
                        settings,
                        DARKROOM_HEALTH_PORT=str(port),
                        DARKROOM_REVEAL_INTERVAL="0.1",
                    ),
                )
                for port in ports
            ]
            try:
                for port, process in zip(ports, notifiers, strict=True):
                    await wait_ready(f"http://127.0.0.1:{port}/readyz", process)
                # Due at once: both loops race for every album from their next round.
                now = datetime.now(UTC)
                wanted = {uuid.uuid4().hex for _ in range(ALBUMS)}
                for album_id in wanted:
                    await res.albums.create(_album(album_id, now))
                received = await _collect(seen, len(wanted))
                for process in notifiers:
                    process.send_signal(signal.SIGTERM)
                outputs = [await asyncio.wait_for(p.communicate(), 30) for p in notifiers]
            finally:
                for process in notifiers:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
            # Both have exited: whatever either published is in the queue by now.
            while (late := await seen.get(no_ack=True, fail=False)) is not None:
                received.append(Envelope.from_bytes(late.body))
    finally:
        await connection.close()
        await delete_topology(amqp_url, Topology.from_settings(settings))
    assert [p.returncode for p in notifiers] == [0, 0]
    assert Counter(e.data["album_id"] for e in received) == Counter(wanted)
    claims = [
        line["album_id"]
        for _, stderr in outputs
        for line in json_lines(stderr)
        if line["event"] == "album revealed"
    ]
    assert sorted(claims) == sorted(wanted), "each album claimed by exactly one process"


def _album(album_id: str, now: datetime) -> AlbumRecord:
    return AlbumRecord(
        id=album_id,
        owner_id="olive",
        title="Party",
        reveal_at=now,
        revealed_at=None,
        created_at=now,
        updated_at=now,
    )


async def _collect(queue: aio_pika.abc.AbstractQueue, count: int) -> list[Envelope]:
    received: list[Envelope] = []
    async with asyncio.timeout(60), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            received.append(Envelope.from_bytes(message.body))
            if len({e.data["album_id"] for e in received}) == count:
                break
    return received
