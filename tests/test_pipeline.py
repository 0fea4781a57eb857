"""One photo through every service, end to end.

Real RabbitMQ, real PostgreSQL and moto's S3/SQS server over HTTP, with each service
running as its own task with its own connections, as it would in its own process. The
storage notification arrives by each route: SQS (AWS format), and MinIO- and Ceph-format
messages published to the storage exchange.
"""

from __future__ import annotations

import io
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from PIL import Image

from services.dev import run_dev
from services.gateway.auth import issue_token
from shared.events import PhotoVerified, outcome_envelope
from shared.keys import original_key
from shared.memory_broker import MemoryBroker
from shared.outbox import Outbox
from shared.settings import Settings
from shared.storage import open_storage
from shared.store import PhotoStatus, Verified, open_store
from shared.topology import Topology
from tests import images
from tests.conftest import JWT_SECRET, delete_topology
from tests.harness import (
    ALL_SERVICES,
    Client,
    WebhookReceiver,
    announce,
    dev_settings,
    intent,
    running,
    with_sqs,
)

pytestmark = pytest.mark.timeout(180)


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


async def test_duplicate_notifications_change_nothing_and_announce_nothing(
    real: Settings, hooks: WebhookReceiver
) -> None:
    """One object announced by all three formats, twice: one verification, one render,
    one photo.ready. With prefetch 1 the storage queue is handled in order, so once a
    later photo is ready every duplicate before it has been handled."""
    real = real.model_copy(update={"prefetch": 1})
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
    photo, sentinel = images.jpeg(1600, 1000, orientation=3), images.jpeg(800, 500)
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        grant = await client.grant(photo, "image/jpeg", method="PUT")
        await client.upload(grant, photo, "image/jpeg")
        key = original_key("alice", grant["photo_id"])
        for fmt in ["minio", "ceph", "aws", "minio", "ceph", "aws"]:
            await announce(real, fmt, key, len(photo))
        later = await client.grant(sentinel, "image/jpeg")
        await client.upload(later, sentinel, "image/jpeg")
        await announce(real, "minio", later["upload"]["fields"]["key"], len(sentinel))
        await hooks.wait_for(later["photo_id"], "photo.ready")
        await assert_ready_and_upright(client, grant["photo_id"])
    assert hooks.deliveries(grant["photo_id"], "photo.ready") == 1
    assert hooks.deliveries(grant["photo_id"], "photo.rejected") == 0


async def test_bytes_swapped_in_after_verification_get_the_photo_rejected(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    """The upload URL outlives verification; a second upload through it must not be
    served as the verified photo."""
    real = await with_sqs(real, unique)
    photo = images.jpeg(1600, 1000)
    swapped = photo[:-1000] + bytes(b ^ 0x5A for b in photo[-1000:-2]) + photo[-2:]
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        grant = await client.grant(photo, "image/jpeg", method="PUT")
        await client.upload(grant, photo, "image/jpeg")
        await hooks.wait_for(grant["photo_id"], "photo.ready")
        renditions = (await client.photo(grant["photo_id"]))["renditions"]
        await client.upload(grant, swapped, "image/jpeg")
        event = await hooks.wait_for(grant["photo_id"], "photo.rejected")
        view = await client.photo(grant["photo_id"])
    assert event["data"]["reason"] == "replaced"
    assert (view["status"], view["reason"], view["renditions"]) == ("rejected", "replaced", {})
    async with open_storage(real) as storage:
        assert await storage.head(original_key("alice", grant["photo_id"])) is None
        for r in renditions.values():
            key = urlsplit(r["url"]).path.split(f"/{real.s3_bucket}/", 1)[1]
            assert await storage.head(key) is None


async def test_html_declared_as_jpeg_is_rejected_removed_and_announced(
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
    assert event["data"]["reason"] == "html"
    assert (view["status"], view["reason"]) == ("rejected", "html")
    assert view["renditions"] == {} and view["original"] is None
    async with open_storage(real) as storage:
        assert await storage.head(grant["upload"]["fields"]["key"]) is None


@pytest.mark.parametrize(
    "parts",
    [
        "embedded",
        pytest.param(
            "real broker and database", marks=[pytest.mark.rabbitmq, pytest.mark.postgres]
        ),
    ],
)
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
    settings = dev_settings(tmp_path, hooks, unique, JWT_SECRET, **real)
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


async def test_a_photo_sent_in_parts_becomes_ready_in_dev_mode(
    tmp_path: Any, hooks: WebhookReceiver, unique: str
) -> None:
    """Grant in parts, part URLs, PUTs straight to the embedded moto, completion: the
    photo is verified and rendered like any other (moto announces the assembled object
    as ObjectCreated:CompleteMultipartUpload to the SQS queue the bridge reads)."""
    settings = dev_settings(
        tmp_path, hooks, unique, JWT_SECRET, multipart_part_size=5 * 1024 * 1024
    )
    photo = images.noise_png(1400, 1300)
    async with running(settings, [run_dev]) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "newcomer"))
        grant = await client.grant(photo, "image/png", multipart=True)
        assert (grant["upload"]["method"], grant["upload"]["part_count"]) == ("MULTIPART", 2)
        await client.upload_in_parts(grant, photo)
        await hooks.wait_for(grant["photo_id"], "photo.ready")
        view = await client.photo(grant["photo_id"])
        assert (view["status"], view["size"], view["width"]) == ("ready", len(photo), 1400)
        original, _ = await client.download(view["original"]["url"])
        assert original == photo


async def test_webhook_failures_are_retried_until_delivered(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    """The receiver answers 503 twice; backoff retries get the event through, every
    attempt signed validly and carrying the same webhook-id."""
    hooks.fail_first = 2
    real = await with_sqs(real, unique)
    fake = b"not an image at all"
    async with running(real, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        client = Client(http, base, issue_token(JWT_SECRET, "alice"))
        grant = await client.grant(fake, "image/png")
        await client.upload(grant, fake, "image/png")
        await hooks.wait_for(grant["photo_id"], "photo.rejected")
    assert [status for _, status in hooks.attempts] == [503, 503, 204]
    assert len({msg_id for msg_id, _ in hooks.attempts}) == 1


async def test_an_event_left_unsent_by_a_crash_is_sent_by_the_relay(
    real: Settings, hooks: WebhookReceiver
) -> None:
    """The ingest worker committed `verified` and its event, then died before publishing:
    the outbox relay publishes it and the photo still becomes ready."""
    real = real.model_copy(update={"outbox_relay_after": 0.2, "outbox_relay_interval": 0.1})
    data = images.jpeg(1200, 900)
    photo_id = uuid.uuid4().hex
    key = original_key("alice", photo_id)
    async with open_storage(real) as storage, open_store(real) as store:
        await storage.ensure_bucket()
        await storage.put(key, data, content_type="image/jpeg")
        info = await storage.head(key)
        assert info is not None
        await store.create_pending(intent(photo_id, "alice", len(data)))
        event = PhotoVerified(
            photo_id=photo_id,
            owner_id="alice",
            object_key=key,
            etag=info.etag,
            content_type="image/jpeg",
            size=len(data),
            keep_location=False,
        )
        envelope = outcome_envelope(event, photo_id=photo_id, trace_id="t")
        verified = Verified(
            content_type="image/jpeg", size=len(data), width=1200, height=900, etag=info.etag
        )
        assert await store.mark_verified(
            photo_id, verified, observed=PhotoStatus.PENDING, envelope=envelope
        )
        # ...and here the ingest worker "crashes": the event is never sent by it.
        async with running(real, ALL_SERVICES):
            ready = await hooks.wait_for(photo_id, "photo.ready")
        outbox = Outbox(store.db, MemoryBroker(), Topology.from_settings(real))
        assert await outbox.claim_unpublished(older_than_s=-1, lease_s=0) == []
    assert ready["data"]["width"] == 1200
