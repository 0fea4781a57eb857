"""Operators can see why messages were parked, replay them after a fix, or purge them."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.broker import open_broker
from shared.dlq import DeadLetters, resolve
from shared.errors import ConfigurationError, PermanentError
from shared.events import Envelope, PhotoRejected
from shared.runtime import Meta, on_events
from shared.settings import Settings
from shared.topology import Topology
from tests.harness import worker


def rejected(photo_id: str) -> bytes:
    event = PhotoRejected(photo_id=photo_id, owner_id="u", reason="empty", detail="")
    return Envelope.wrap(event, trace_id="t").to_bytes()


async def depth_reaches(dead: DeadLetters, topology: Topology, depth: int) -> None:
    """Queue depth has no event to await; poll the broker's count."""
    async with asyncio.timeout(10):
        while (await dead.depths())[topology.notifier.dead_letter_queue] != depth:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.fixture
async def parked_two(rabbit_settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """Two messages parked by a handler that fails permanently until it is 'fixed'."""
    topology = Topology.from_settings(rabbit_settings)
    state: dict[str, Any] = {"broken": True, "handled": asyncio.Queue()}

    async def handler(event: PhotoRejected, meta: Meta) -> None:
        if state["broken"]:
            raise PermanentError("notifier misconfigured: no endpoint for tenant")
        state["handled"].put_nowait(event.photo_id)

    async with open_broker(rabbit_settings) as broker:
        consumer = worker(broker, topology, on_events(topology.notifier, {PhotoRejected: handler}))
        await consumer.start()
        connection, dead = await DeadLetters.connect(rabbit_settings.broker_url, topology)
        async with connection:
            for photo in ("a", "b"):
                await broker.publish(topology.events_exchange, "photo.rejected", rejected(photo))
            await depth_reaches(dead, topology, 2)
            yield {"dead": dead, "topology": topology, "state": state, "broker": broker}
        await consumer.drain()


async def test_show_tells_why_without_taking_messages(parked_two: dict[str, Any]) -> None:
    dead, topology = parked_two["dead"], parked_two["topology"]
    shown = await dead.show(resolve(topology, "notifier"), limit=10)
    assert len(shown) == 2
    assert all("no endpoint for tenant" in p.reason for p in shown)
    assert {p.routing_key for p in shown} == {"photo.rejected"}
    await depth_reaches(dead, topology, 2)  # handed back, not taken


async def test_replay_after_the_fix_delivers_them(parked_two: dict[str, Any]) -> None:
    dead, topology, state = parked_two["dead"], parked_two["topology"], parked_two["state"]
    state["broken"] = False
    assert await dead.replay(resolve(topology, topology.notifier.name), limit=10) == 2
    handled = {await asyncio.wait_for(state["handled"].get(), 10) for _ in range(2)}
    assert handled == {"a", "b"}
    await depth_reaches(dead, topology, 0)


async def test_purge_drops_them(parked_two: dict[str, Any]) -> None:
    dead, topology = parked_two["dead"], parked_two["topology"]
    assert await dead.purge(resolve(topology, "notifier")) == 2
    await depth_reaches(dead, topology, 0)


def test_unknown_queue_names_are_refused_with_the_known_ones(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="known queues"):
        resolve(Topology.from_settings(settings), "nope")


async def test_the_cli_lists_and_shows(
    parked_two: dict[str, Any], rabbit_settings: Settings
) -> None:
    env = {
        **os.environ,
        "DARKROOM_BROKER_URL": rabbit_settings.broker_url,
        "DARKROOM_TOPOLOGY_PREFIX": rabbit_settings.topology_prefix,
    }

    async def darkroom(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "darkroom"),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        return out.decode()

    listing = await darkroom("dlq", "list")
    assert f"2  {rabbit_settings.topology_prefix}.notifier.dlq" in listing
    shown = await darkroom("dlq", "show", "notifier")
    assert shown.count("reason: PermanentError: notifier misconfigured") == 2
