"""Every service rides out a full restart of RabbitMQ and of PostgreSQL without being
restarted itself: readiness reports the server missing while it is away and recovers
after, and a photo uploaded before, one uploaded while the server is down and one
uploaded after all become ready, each announced once.

The servers restarted here are the test's own (chaos.servers), started from the installed
binaries on free ports: the shared ones on this machine must stay up for everyone else.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from pydantic import SecretStr

from chaos import fleet
from chaos.servers import OwnPostgres, OwnRabbit
from services.gateway.auth import issue_token
from services.ingest_worker.sqs_bridge import forward_batch
from shared.dlq import DeadLetters
from shared.errors import BrokerUnavailable
from shared.settings import Settings
from shared.storage import sqs_client_kwargs
from shared.topology import Topology
from tests import images
from tests.conftest import JWT_SECRET, delete_topology
from tests.harness import WEBHOOK_SECRET, Client, WebhookReceiver, process_env, with_sqs

pytestmark = pytest.mark.timeout(240)

Fleet = dict[str, fleet.ServiceProcess]


@asynccontextmanager
async def services_of(
    settings: Settings, log_dir: Path, *, start: bool = True
) -> AsyncIterator[Fleet]:
    """All four services, each its own process, ready (unless `start` is False); stopped
    at the end."""
    env = process_env(
        settings,
        DARKROOM_PUBLISH_TIMEOUT="2",
        DARKROOM_DATABASE_TIMEOUT="3",
        # No sweep: it would verify a stuck upload after a minute and hide a loss.
        DARKROOM_SWEEP_INTERVAL="3600",
    )
    services = fleet.make_fleet(env, log_dir)
    try:
        if start:
            async with aiohttp.ClientSession() as http:
                await fleet.start_all(services, http, Counter())
        yield services
    finally:
        await fleet.stop_all(services)


@dataclass(frozen=True)
class Readiness:
    status: int  # 0: not answering at all, a dead process rather than a readiness
    failing: frozenset[str] = frozenset()  # the checks that fail


async def readiness(http: aiohttp.ClientSession, services: Fleet) -> dict[str, Readiness]:
    seen = {}
    for name, service in services.items():
        try:
            async with http.get(f"{service.base_url}/readyz") as resp:
                checks: dict[str, bool] = (await resp.json())["checks"]
                failing = frozenset(check for check, ok in checks.items() if not ok)
                seen[name] = Readiness(resp.status, failing)
        except aiohttp.ClientError:
            seen[name] = Readiness(0)
    return seen


async def until_every_service_sees(
    http: aiohttp.ClientSession, services: Fleet, failing: set[str], timeout: float
) -> dict[str, Readiness]:
    """Poll /readyz as an orchestrator does until every service reports exactly
    `failing` as its failing checks."""
    # The gateway also reports whether it receives live events: not while the broker is away.
    events = {"events"} if "broker" in failing else set()
    want = {n: frozenset(failing | (events if n == "gateway" else set())) for n in services}
    seen: dict[str, Readiness] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                seen = await readiness(http, services)
                if {name: r.failing for name, r in seen.items() if r.status} == want:
                    break
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not every service saw {failing or 'none'} failing: {seen}") from None
    return seen


async def until_holding(http: aiohttp.ClientSession, service: fleet.ServiceProcess) -> None:
    async with asyncio.timeout(30):
        while await fleet.messages_total(http, service, "held") <= 0:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.1)


async def nothing_parked(settings: Settings) -> None:
    connection, dead_letters = await DeadLetters.connect(
        settings.broker_url, Topology.from_settings(settings)
    )
    async with connection:
        depths = await dead_letters.depths()
    assert not any(depths.values()), depths


async def upload(client: Client, photo: bytes, grant: dict[str, Any] | None = None) -> str:
    grant = grant or await client.grant(photo, "image/jpeg")
    await client.upload(grant, photo, "image/jpeg")
    return str(grant["photo_id"])


async def grant_status(client: Client, photo: bytes) -> int:
    body = {"filename": "x.jpg", "content_type": "image/jpeg", "size": len(photo)}
    async with client.http.post(
        f"{client.base}/v1/uploads", json=body, headers=client.headers
    ) as resp:
        return resp.status


async def assert_ready_once(
    client: Client, hooks: WebhookReceiver, services: Fleet, photo_ids: list[str]
) -> None:
    for photo_id in photo_ids:
        await hooks.wait_for(photo_id, "photo.ready", timeout=90)
        assert (await client.photo(photo_id))["status"] == "ready"
    announced = Counter(
        hook_id
        for payload, hook_id in zip(hooks.received, hooks.ids, strict=True)
        if payload["type"] == "photo.ready"
    )
    assert len(announced) == len(photo_ids), announced
    restarted = {name: s.starts for name, s in services.items() if s.starts != 1 or not s.running}
    assert not restarted, f"services were restarted or died: {restarted}"


def wired(settings: Settings, hooks: WebhookReceiver, **servers: str) -> Settings:
    return settings.model_copy(
        update={"webhook_url": hooks.url, "webhook_secret": SecretStr(WEBHOOK_SECRET), **servers}
    )


async def test_every_service_rides_out_a_broker_restart(
    settings: Settings,
    own_rabbit: OwnRabbit,
    postgres_url: str,
    hooks: WebhookReceiver,
    unique: str,
    tmp_path: Path,
) -> None:
    real = wired(settings, hooks, broker_url=own_rabbit.url, database_url=postgres_url)
    real = await with_sqs(real, unique)
    photos = [images.jpeg(1200 + 8 * i, 800) for i in range(3)]
    async with services_of(real, tmp_path) as services, aiohttp.ClientSession() as http:
        client = Client(http, services["gateway"].base_url, issue_token(JWT_SECRET, "alice"))
        before = await upload(client, photos[0])
        await hooks.wait_for(before, "photo.ready")

        await own_rabbit.stop()
        seen = await until_every_service_sees(http, services, {"broker"}, timeout=20)
        # Workers leave their load balancer; the API needs only the database and stays.
        assert {name: r.status for name, r in seen.items()} == {
            "gateway": 200,
            "ingest_worker": 503,
            "thumbnail_worker": 503,
            "notifier": 503,
        }
        # Granted and stored while the broker is away: the intent waits in the outbox,
        # the S3 notification in SQS.
        during = await upload(client, photos[1])
        await own_rabbit.start()
        await until_every_service_sees(http, services, set(), timeout=60)

        after = await upload(client, photos[2])
        await assert_ready_once(client, hooks, services, [before, during, after])
    await nothing_parked(real)


async def test_the_gateway_starts_and_grants_while_the_broker_is_down(
    settings: Settings,
    own_rabbit: OwnRabbit,
    postgres_url: str,
    hooks: WebhookReceiver,
    unique: str,
    tmp_path: Path,
) -> None:
    """A replica rescheduled during a broker outage serves; it connects once it can."""
    real = wired(settings, hooks, broker_url=own_rabbit.url, database_url=postgres_url)
    real = await with_sqs(real, unique)
    photo = images.jpeg(1000, 700)
    await own_rabbit.stop()
    async with (
        services_of(real, tmp_path, start=False) as services,
        aiohttp.ClientSession() as http,
    ):
        gateway = services["gateway"]
        await fleet.ensure_up(gateway, http, Counter())
        only_gateway = {"gateway": gateway}
        assert (await readiness(http, only_gateway))["gateway"] == Readiness(
            200, frozenset({"broker", "events"})
        )
        client = Client(http, gateway.base_url, issue_token(JWT_SECRET, "dora"))
        photo_id = await upload(client, photo)

        await own_rabbit.start()
        await until_every_service_sees(http, only_gateway, set(), timeout=30)
        workers = {name: s for name, s in services.items() if name != "gateway"}
        await fleet.start_all(workers, http, Counter())
        await assert_ready_once(client, hooks, services, [photo_id])
    await nothing_parked(real)


async def test_every_service_rides_out_a_database_restart(
    settings: Settings,
    amqp_url: str,
    own_postgres: OwnPostgres,
    hooks: WebhookReceiver,
    unique: str,
    tmp_path: Path,
) -> None:
    real = wired(settings, hooks, broker_url=amqp_url, database_url=own_postgres.url)
    real = await with_sqs(real, unique)
    photos = [images.jpeg(1200, 800 + 8 * i) for i in range(3)]
    try:
        async with services_of(real, tmp_path) as services, aiohttp.ClientSession() as http:
            client = Client(http, services["gateway"].base_url, issue_token(JWT_SECRET, "bob"))
            before = await upload(client, photos[0])
            await hooks.wait_for(before, "photo.ready")
            granted = await client.grant(photos[1], "image/jpeg")

            await own_postgres.stop()
            seen = await until_every_service_sees(http, services, {"database"}, timeout=20)
            assert {r.status for r in seen.values()} == {503}
            # Granted before, stored while the database is away.
            during = await upload(client, photos[1], granted)
            # No grant without a recorded intent: refused with a reason, not half-made.
            assert await grant_status(client, photos[2]) == 503
            # Its notification meets the outage: held, not retried into a dead letter.
            await until_holding(http, services["ingest_worker"])
            await own_postgres.start()
            await until_every_service_sees(http, services, set(), timeout=60)

            after = await upload(client, photos[2])
            await assert_ready_once(client, hooks, services, [before, during, after])
        await nothing_parked(real)
    finally:
        await delete_topology(amqp_url, Topology.from_settings(real))


class UnreachableBroker:
    """Only what the SQS bridge touches: a broker whose publishes cannot be confirmed."""

    is_ready = True

    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        raise BrokerUnavailable("publish not confirmed")


class RefusesOne:
    """Confirms every publish but that of "notification 1"."""

    is_ready = True

    def __init__(self) -> None:
        self.confirmed: list[bytes] = []

    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        if body == b"notification 1":
            raise BrokerUnavailable("publish not confirmed")
        self.confirmed.append(body)


class StalledBroker:
    """Takes a publish and never confirms it."""

    is_ready = True

    def __init__(self) -> None:
        self.publishing = asyncio.Event()

    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        self.publishing.set()
        await asyncio.Event().wait()


@asynccontextmanager
async def three_notifications(settings: Settings) -> AsyncIterator[Any]:
    """An SQS client, with three notifications waiting in the settings' queue."""
    async with get_session().create_client(
        "sqs", **sqs_client_kwargs(settings, settings.sqs_endpoint_url)
    ) as sqs:
        for n in range(3):
            await sqs.send_message(QueueUrl=settings.sqs_queue_url, MessageBody=f"notification {n}")
        yield sqs


async def visible_now(sqs: Any, settings: Settings) -> list[str]:
    """The notifications anyone could receive right now (S3's own s3:TestEvent, queued
    when the bucket was wired to the queue, left out)."""
    again = await sqs.receive_message(
        QueueUrl=settings.sqs_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    return sorted(m["Body"] for m in again.get("Messages", []) if "TestEvent" not in m["Body"])


async def test_notifications_in_hand_at_shutdown_come_back_at_once(
    settings: Settings, unique: str
) -> None:
    settings = await with_sqs(settings, unique)
    stalled = StalledBroker()
    broker: Any = stalled
    async with three_notifications(settings) as sqs:
        moving = asyncio.create_task(
            forward_batch(sqs, settings, broker, Topology.from_settings(settings))
        )
        await asyncio.wait_for(stalled.publishing.wait(), 10)
        moving.cancel()  # what the bridge does on SIGTERM
        await asyncio.gather(moving, return_exceptions=True)
        assert await visible_now(sqs, settings) == [f"notification {n}" for n in range(3)]


async def test_notifications_the_bridge_could_not_forward_come_back_at_once(
    settings: Settings, unique: str
) -> None:
    """Not after the queue's visibility timeout (30 s here, often minutes in production)."""
    settings = await with_sqs(settings, unique)
    broker: Any = UnreachableBroker()
    async with three_notifications(settings) as sqs:
        with pytest.raises(BrokerUnavailable):
            await forward_batch(sqs, settings, broker, Topology.from_settings(settings))
        assert await visible_now(sqs, settings) == [f"notification {n}" for n in range(3)]


async def test_of_a_batch_only_the_notification_not_confirmed_comes_back(
    settings: Settings, unique: str
) -> None:
    settings = await with_sqs(settings, unique)
    broker = RefusesOne()
    broker_any: Any = broker
    async with three_notifications(settings) as sqs:
        with pytest.raises(BrokerUnavailable):
            await forward_batch(sqs, settings, broker_any, Topology.from_settings(settings))
        ours = sorted(b for b in broker.confirmed if b.startswith(b"notification"))
        assert ours == [b"notification 0", b"notification 2"]
        assert await visible_now(sqs, settings) == ["notification 1"]
