"""One photo through every service, end to end.

Real RabbitMQ, real PostgreSQL and moto's S3/SQS server over HTTP, with each service
running as its own task with its own connections, as it would in its own process. The
storage notification arrives by each route: SQS (AWS format), and MinIO- and Ceph-format
messages published to the storage exchange.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import pytest
from PIL import Image
from pydantic import SecretStr

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.embedded import provision_bucket_with_sqs
from shared.keys import original_key
from shared.settings import Settings
from shared.storage import open_storage
from shared.topology import Topology
from tests import images, s3events
from tests.conftest import JWT_SECRET, delete_topology
from tests.harness import (
    ALL_SERVICES,
    WEBHOOK_SECRET,
    Client,
    WebhookReceiver,
    free_port,
    running,
    webhook_receiver,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
async def real(
    settings: Settings, amqp_url: str, postgres_url: str, hooks: WebhookReceiver
) -> AsyncIterator[Settings]:
    real = settings.model_copy(
        update={
            "broker_url": amqp_url,
            "database_url": postgres_url,
            "webhook_url": hooks.url,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "gateway_port": free_port(),
        }
    )
    yield real
    await delete_topology(amqp_url, Topology.from_settings(real))


async def with_sqs(settings: Settings, unique: str) -> Settings:
    queue_url = await provision_bucket_with_sqs(settings, f"notify-{unique}")
    return settings.model_copy(update={"sqs_queue_url": queue_url})


async def announce(settings: Settings, fmt: str, key: str, size: int) -> None:
    """Publish a notification the way MinIO or Ceph would: straight to the exchange."""
    body = getattr(s3events, fmt)(settings.s3_bucket, key, size)
    connection = await aio_pika.connect(settings.broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology.from_settings(settings).storage_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"{fmt}.object-created",
        )


async def assert_ready_and_upright(client: Client, photo_id: str) -> dict[str, Any]:
    view = await client.photo(photo_id)
    assert view["status"] == "ready", view
    assert (view["width"], view["height"]) == (1600, 1000)
    expected = {
        "thumb": ((256, 160), "image/webp", "WEBP"),
        "preview": ((1280, 800), "image/jpeg", "JPEG"),
    }
    assert set(view["renditions"]) == set(expected)
    for name, (size, content_type, fmt) in expected.items():
        rendition = view["renditions"][name]
        assert (rendition["width"], rendition["height"]) == size
        data, served_type = await client.download(rendition["url"])
        assert served_type == content_type
        with Image.open(io.BytesIO(data)) as img:
            assert (img.size, img.format) == (size, fmt)
        assert images.marker_top_left(data), f"{name} is not upright"
    return view


@pytest.mark.parametrize("route", ["sqs", "minio", "ceph"])
async def test_photo_travels_every_service_on_real_components(
    real: Settings, hooks: WebhookReceiver, unique: str, route: str
) -> None:
    if route == "sqs":
        real = await with_sqs(real, unique)
    else:
        async with open_storage(real) as storage:
            await storage.ensure_bucket()
    # Stored sideways with EXIF orientation 6: renditions must come out upright.
    photo = images.jpeg(1600, 1000, orientation=6)
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        grant = await client.grant(photo, "image/jpeg")
        photo_id = grant["photo_id"]
        await client.upload(grant, photo, "image/jpeg")
        if route != "sqs":
            await announce(real, route, grant["upload"]["fields"]["key"], len(photo))
        ready = await hooks.wait_for(photo_id, "photo.ready")
        view = await assert_ready_and_upright(client, photo_id)
        original, _ = await client.download(view["original"]["url"])
    assert original == photo
    assert {r["name"] for r in ready["data"]["renditions"]} == {"thumb", "preview"}


async def test_put_upload_and_duplicate_notifications_end_in_one_ready_photo(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    real = await with_sqs(real, unique)
    photo = images.jpeg(1600, 1000, orientation=3)
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        grant = await client.grant(photo, "image/jpeg", method="PUT")
        await client.upload(grant, photo, "image/jpeg")
        key = original_key("alice", grant["photo_id"])
        # The same object announced again by two other routes, as a flaky source would.
        await announce(real, "minio", key, len(photo))
        await announce(real, "ceph", key, len(photo))
        await hooks.wait_for(grant["photo_id"], "photo.ready")
        await assert_ready_and_upright(client, grant["photo_id"])
    # Every delivery of photo.ready for this photo carries the same webhook-id.
    ready_ids = {
        i
        for i, p in zip(hooks.ids, hooks.received, strict=True)
        if p["type"] == "photo.ready" and p["data"]["photo_id"] == grant["photo_id"]
    }
    assert len(ready_ids) == 1


async def test_text_declared_as_jpeg_is_rejected_removed_and_announced(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    real = await with_sqs(real, unique)
    fake = b"<html><script>alert(1)</script></html>\n" * 50
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "mallory"))
        grant = await client.grant(fake, "image/jpeg")
        await client.upload(grant, fake, "image/jpeg")
        event = await hooks.wait_for(grant["photo_id"], "photo.rejected")
        view = await client.photo(grant["photo_id"])
    assert event["data"]["reason"] == "unsupported_type"
    assert (view["status"], view["reason"]) == ("rejected", "unsupported_type")
    assert view["renditions"] == {} and view["original"] is None
    async with open_storage(real) as storage:
        assert await storage.head(grant["upload"]["fields"]["key"]) is None


@pytest.mark.parametrize("parts", ["embedded", "real broker and database"])
async def test_same_flow_in_dev_mode(
    tmp_path: Any,
    hooks: WebhookReceiver,
    unique: str,
    parts: str,
    request: pytest.FixtureRequest,
) -> None:
    """`darkroom dev` as a newcomer runs it (in-process broker, SQLite, its own moto), and
    with DARKROOM_BROKER_URL / DARKROOM_DATABASE_URL switching those parts to real ones."""
    real: dict[str, Any] = {}
    if parts != "embedded":
        real = {
            "broker_url": request.getfixturevalue("amqp_url"),
            "database_url": request.getfixturevalue("postgres_url"),
        }
    settings = Settings(
        data_dir=tmp_path,
        gateway_port=free_port(),
        dev_s3_port=0,
        auth_jwt_secret=SecretStr(JWT_SECRET),
        webhook_url=hooks.url,
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        sqs_wait_seconds=1,
        log_json=True,
        health_port=0,
        s3_bucket=f"dev-{unique}",
        topology_prefix=f"dev-{unique}",
        **real,
    )
    photo = images.jpeg(1600, 1000, orientation=8)
    try:
        async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
            client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
            grant = await client.grant(photo, "image/jpeg")
            await client.upload(grant, photo, "image/jpeg")
            await hooks.wait_for(grant["photo_id"], "photo.ready")
            await assert_ready_and_upright(client, grant["photo_id"])
    finally:
        if real:
            await delete_topology(real["broker_url"], Topology.from_settings(settings))
    assert (tmp_path / "darkroom.sqlite3").exists() == (parts == "embedded")


async def test_webhook_failures_are_retried_until_delivered(real: Settings, unique: str) -> None:
    """The receiver fails twice; the notifier's backoff gets the event through."""
    failures = 2
    arrived: asyncio.Queue[str] = asyncio.Queue()

    async def flaky(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal failures
        if failures:
            failures -= 1
            return aiohttp.web.Response(status=503)
        arrived.put_nowait(request.headers["webhook-id"])
        return aiohttp.web.Response(status=200)

    app = aiohttp.web.Application()
    app.router.add_post("/hook", flaky)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    real = await with_sqs(
        real.model_copy(update={"webhook_url": f"http://127.0.0.1:{port}/hook"}), unique
    )
    fake = b"not an image at all"
    try:
        async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
            client = Client(http, base, issue_token(JWT_SECRET, "alice"))
            grant = await client.grant(fake, "image/png")
            await client.upload(grant, fake, "image/png")
            webhook_id = await asyncio.wait_for(arrived.get(), 60)
    finally:
        await runner.cleanup()
    assert failures == 0 and webhook_id
