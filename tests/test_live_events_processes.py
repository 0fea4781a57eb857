"""Live events across gateway replicas: two gateway processes on the real RabbitMQ and
PostgreSQL. A stream on one receives what happens through the other, resumes on the
other with Last-Event-ID, and each user sees only their own events."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.gateway.auth import issue_token
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import JWT_SECRET, delete_topology
from tests.harness import free_port, process_env
from tests.sse import SseReader
from tests.test_processes import start

pytestmark = pytest.mark.processes


@dataclass
class Replica:
    base: str
    process: asyncio.subprocess.Process


@dataclass
class Cluster:
    http: aiohttp.ClientSession
    a: Replica
    b: Replica

    async def call(self, via: Replica, method: str, path: str, user: str, **kw: Any) -> Any:
        async with self.http.request(method, via.base + path, headers=auth(user), **kw) as resp:
            assert resp.status < 300, await resp.text()
            return await resp.json() if resp.content_type == "application/json" else None

    async def pending_photo(self, via: Replica, user: str) -> str:
        body = {"filename": "a.jpg", "content_type": "image/jpeg", "size": 1000}
        grant = await self.call(via, "POST", "/v1/uploads", user, json=body)
        photo_id: str = grant["photo_id"]
        return photo_id

    async def delete_photo(self, via: Replica, user: str, photo_id: str) -> None:
        await self.call(via, "DELETE", f"/v1/photos/{photo_id}", user)

    async def marker(self, via: Replica, user: str) -> str:
        """An event only `user` may see; returns the photo id it names."""
        photo_id = await self.pending_photo(via, user)
        await self.delete_photo(via, user, photo_id)
        return photo_id

    @asynccontextmanager
    async def stream(
        self, via: Replica, user: str, resume: str | None = None
    ) -> AsyncIterator[SseReader]:
        headers = auth(user) | ({"Last-Event-ID": resume} if resume else {})
        async with self.http.get(f"{via.base}/v1/events", headers=headers) as resp:
            yield SseReader(resp)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(JWT_SECRET, user)}"}


async def ready(base: str, process: asyncio.subprocess.Process) -> None:
    """Every readiness check true: the database, the broker, and the live-event queue."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(60):
        while process.returncode is None:
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200 and all((await resp.json())["checks"].values()):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway exited with {process.returncode} before becoming ready")


async def stop(replica: Replica) -> None:
    if replica.process.returncode is None:
        replica.process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(replica.process.communicate(), 60)
    assert replica.process.returncode == 0, stderr.decode()[-2000:]


@pytest.fixture
async def cluster(settings: Settings, amqp_url: str, postgres_url: str) -> AsyncIterator[Cluster]:
    settings = settings.model_copy(update={"broker_url": amqp_url, "database_url": postgres_url})
    replicas: list[Replica] = []
    try:
        # One after the other: the first brings the schema up to date.
        for _ in range(2):
            port = free_port()
            env = process_env(
                settings,
                DARKROOM_GATEWAY_PORT=str(port),
                DARKROOM_HEALTH_PORT="0",
                DARKROOM_RATE_LIMIT_USER="0",
                DARKROOM_EVENTS_MAX_STREAMS_PER_USER="2",
                DARKROOM_EVENTS_KEEPALIVE="0.2",
                # Longer than any wait here: a stream holding up the drain would show.
                DARKROOM_SHUTDOWN_GRACE="60",
            )
            replica = Replica(f"http://127.0.0.1:{port}", await start("gateway", env))
            replicas.append(replica)
            await ready(replica.base, replica.process)
        async with aiohttp.ClientSession() as http:
            yield Cluster(http, *replicas)
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                replica.process.kill()
                await replica.process.wait()
        await delete_topology(amqp_url, Topology.from_settings(settings))


async def test_a_stream_on_one_replica_receives_what_happens_through_the_other(
    cluster: Cluster,
) -> None:
    photo_id = await cluster.pending_photo(cluster.b, "alice")
    async with cluster.stream(cluster.a, "alice") as sse:
        await cluster.delete_photo(cluster.b, "alice", photo_id)
        message = await sse.message()
    assert message.event == "photo.deleted" and message.id
    assert message.json()["data"] == {"photo_id": photo_id, "owner_id": "alice"}


async def test_each_user_receives_only_their_own_and_their_albums_events(
    cluster: Cluster,
) -> None:
    """Matrix: the photo's owner, the album's owner, its member, an outsider."""
    a, b = cluster.a, cluster.b
    async with (
        cluster.stream(a, "alice") as alice,
        cluster.stream(b, "bob") as bob,
        cluster.stream(a, "carol") as outsider,
    ):
        album = await cluster.call(b, "POST", "/v1/albums", "bob", json={"title": "Trip"})
        await cluster.call(
            a, "PUT", f"/v1/albums/{album['id']}/members/alice", "bob", json={"role": "viewer"}
        )
        photo_id = await cluster.pending_photo(b, "bob")
        await cluster.delete_photo(a, "bob", photo_id)
        await cluster.call(b, "DELETE", f"/v1/albums/{album['id']}", "bob")
        alice_got = [await alice.message() for _ in range(2)]
        bob_got = [await bob.message() for _ in range(3)]
        assert [m.event for m in alice_got] == ["album.member_added", "album.deleted"]
        assert [m.event for m in bob_got] == [
            "album.member_added",
            "photo.deleted",
            "album.deleted",
        ]
        assert bob_got[1].json()["data"]["photo_id"] == photo_id
        assert alice_got[1].json()["data"]["member_ids"] == ["alice"]
        mark = await cluster.marker(b, "carol")
        assert (await outsider.message()).json()["data"]["photo_id"] == mark
        mark = await cluster.marker(b, "alice")
        assert (await alice.message()).json()["data"]["photo_id"] == mark, "not bob's photo"


async def test_last_event_id_resumes_on_the_other_replica_with_exactly_the_missed_events(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    photos = [await cluster.pending_photo(a, "alice") for _ in range(3)]
    async with cluster.stream(b, "bob") as bob:
        async with cluster.stream(a, "alice") as sse:
            await cluster.delete_photo(b, "alice", photos[0])
            first = await sse.message()
        await cluster.delete_photo(a, "alice", photos[1])
        await cluster.delete_photo(b, "alice", photos[2])
        # B handles its queue in order: once bob's stream there has this, B has all before.
        mark = await cluster.marker(a, "bob")
        assert (await bob.message()).json()["data"]["photo_id"] == mark
    async with cluster.stream(b, "alice", first.id) as resumed:
        missed = [await resumed.message(), await resumed.message()]
        mark = await cluster.marker(a, "alice")
        after = await resumed.message()
    assert [m.json()["data"]["photo_id"] for m in missed] == photos[1:]
    assert after.json()["data"]["photo_id"] == mark


async def test_the_cap_answers_429_and_keep_alive_comments_arrive(cluster: Cluster) -> None:
    async with cluster.stream(cluster.a, "alice") as one, cluster.stream(cluster.a, "alice"):
        headers = auth("alice")
        async with cluster.http.get(f"{cluster.a.base}/v1/events", headers=headers) as resp:
            assert resp.status == 429
            assert (await resp.json(content_type=None))["code"] == "too_many_streams"
        async with cluster.stream(cluster.b, "alice") as other:
            assert other.response.status == 200, "the cap is per replica"
        assert await one.comment() == "keep-alive"


async def test_sigterm_ends_open_streams_and_the_gateway_exits_cleanly(cluster: Cluster) -> None:
    async with cluster.stream(cluster.a, "alice") as sse:
        cluster.a.process.send_signal(signal.SIGTERM)
        assert await sse.ended(timeout=20)
    await stop(cluster.a)
