"""The ingest worker on its own terms: the hostile corpus, orphans, hints, the sweep, purges,
ordering, and how much of an object it reads. Real RabbitMQ, PostgreSQL and moto's S3/SQS
server over HTTP; every service runs as it would in production."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from services.gateway.auth import issue_token
from services.ingest_worker.inspect import (
    ByteStream,
    Truncated,
    count_gif_frames,
    count_webp_frames,
    find_active_content,
    identify_non_image,
    isobmff_truncation,
)
from services.ingest_worker.verify import FIRST_READ, TAIL_READ, verify
from shared.broker import open_broker, publish
from shared.events import AccountDeleted, PhotoDeleted
from shared.keys import original_key
from shared.settings import Settings
from shared.storage import Body, Storage, open_storage
from shared.store import PhotoStatus, open_store
from shared.topology import Topology
from tests import hostile, images
from tests.conftest import JWT_SECRET
from tests.harness import ALL_SERVICES, Client, WebhookReceiver, announce, intent, running, with_sqs

pytestmark = pytest.mark.timeout(240)


# --- byte-level checks ---------------------------------------------------------------


async def chunks_of(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def test_frame_walkers_count_and_stop_early() -> None:
    gif, webp = hostile.animation("GIF", 5), hostile.animation("WEBP", 5)
    assert await count_gif_frames(ByteStream(chunks_of(gif)), limit=100) == 5
    assert await count_webp_frames(ByteStream(chunks_of(webp)), limit=100) == 5
    # Past the limit they stop reading: limit + 1 is enough to refuse.
    assert await count_gif_frames(ByteStream(chunks_of(gif)), limit=2) == 3
    with pytest.raises(Truncated):
        await count_gif_frames(ByteStream(chunks_of(gif[:-30])), limit=100)


async def test_box_walk_finds_a_cut_avif() -> None:
    avif = hostile.still("AVIF", quality=60)

    async def reader(data: bytes, start: int, end: int) -> bytes:
        return data[start : end + 1]

    assert await isobmff_truncation(lambda s, e: reader(avif, s, e), len(avif)) is None
    cut = avif[:-50]
    assert await isobmff_truncation(lambda s, e: reader(cut, s, e), len(cut)) is not None


def test_markup_inside_real_metadata_is_not_active_content() -> None:
    # XMP is XML inside the image; it must not count as a polyglot.
    xmp = b'<?xpacket begin=""?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    assert find_active_content(images.jpeg(64, 48) + b"\x00" * 10, xmp) is None
    assert identify_non_image(b"\xef\xbb\xbf  <svg xmlns='x'/>") is not None


# --- through the running services -----------------------------------------------------


@pytest.fixture
async def ingest_settings(real: Settings, unique: str, hooks: WebhookReceiver) -> Settings:
    tight = real.model_copy(
        update={"max_frames": hostile.MAX_FRAMES, "max_upload_bytes": hostile.MAX_UPLOAD}
    )
    return await with_sqs(tight, unique)


@asynccontextmanager
async def client_for(settings: Settings, user: str = "alice") -> AsyncIterator[Client]:
    async with running(settings, ALL_SERVICES) as base, aiohttp.ClientSession() as http:
        yield Client(http, base, issue_token(JWT_SECRET, user))


async def grant_and_upload(
    client: Client, data: bytes, declared_type: str, declared_size: int | None = None
) -> dict[str, Any]:
    size = declared_size if declared_size is not None else len(data)
    body = {"filename": "upload", "content_type": declared_type, "size": size}
    async with client.http.post(
        f"{client.base}/v1/uploads", json=body, headers=client.headers
    ) as resp:
        assert resp.status == 201, await resp.text()
        grant: dict[str, Any] = await resp.json()
    await client.upload(grant, data, declared_type)
    return grant


async def test_every_hostile_upload_is_rejected_with_its_reason_and_removed(
    ingest_settings: Settings, hooks: WebhookReceiver
) -> None:
    corpus, accepted = hostile.build_corpus(), hostile.build_accepted()
    async with client_for(ingest_settings) as client:
        grants = [
            (
                case,
                await grant_and_upload(client, case.data, case.declared_type, case.declared_size),
            )
            for case in corpus
        ]
        goods = [
            (good, await grant_and_upload(client, good.data, good.declared_type))
            for good in accepted
        ]
        outcomes: dict[str, tuple[Any, ...]] = {}
        for case, grant in grants:
            event = await hooks.wait_for(grant["photo_id"], "photo.rejected")
            view = await client.photo(grant["photo_id"])
            outcomes[case.name] = (event["data"]["reason"], view["status"], view["reason"])
        for good, grant in goods:
            await hooks.wait_for(grant["photo_id"], "photo.ready")
            outcomes[good.name] = ("ready",)
    expected: dict[str, tuple[Any, ...]] = {
        case.name: (case.reason, "rejected", case.reason) for case in corpus
    }
    expected |= {good.name: ("ready",) for good in accepted}
    assert outcomes == expected
    async with open_storage(ingest_settings) as storage:
        for case, grant in grants:
            assert await storage.head(grant["upload"]["fields"]["key"]) is None, case.name


@pytest.mark.parametrize("fmt", ["minio", "ceph", "aws"])
async def test_objects_nobody_asked_for_are_removed_in_every_format(
    real: Settings, fmt: str
) -> None:
    """Unknown keys (with spaces, plus signs, unicode, slashes) and a key under another
    user's prefix are deleted, never recorded."""
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
    someone_elses = original_key("bob", "0" * 32)
    keys = ["stray/holiday photo+1 ünï.jpg", "originals/not-a-digest/x y.jpg", someone_elses]
    async with running(real, ALL_SERVICES), open_storage(real) as storage:
        async with open_store(real) as store:
            await store.create_pending(intent("0" * 32, "alice", 5))
        for key in keys:
            await storage.put(key, images.jpeg(64, 48), content_type="image/jpeg")
            await announce(real, fmt, key, 10)
        for key in keys:
            await until_gone(storage, key)
        async with open_store(real) as store:
            photo = await store.get("0" * 32)
    assert photo is not None and photo.status is PhotoStatus.PENDING  # alice's stays as it was


async def until_gone(storage: Storage, key: str, timeout: float = 30) -> None:
    """Deletion has no event to await from outside the worker: poll the object."""
    async with asyncio.timeout(timeout):
        while await storage.head(key) is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_notification_before_its_intent_still_ends_ready(
    real: Settings, hooks: WebhookReceiver
) -> None:
    """The storage event overtakes the intent's record: retried until it is there."""
    real = real.model_copy(
        update={"retry_max_attempts": 8, "retry_base_ms": 200, "retry_cap_ms": 200}
    )
    photo_id, data = "1" * 32, images.jpeg(800, 500)
    key = original_key("carol", photo_id)
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
        await storage.put(key, data, content_type="image/jpeg")
    async with running(real, ALL_SERVICES), open_store(real) as store:
        await announce(real, "ceph", key, len(data))
        await store.create_pending(intent(photo_id, "carol", len(data), object_key=key))
        ready = await hooks.wait_for(photo_id, "photo.ready")
    assert ready["data"]["width"] == 800


async def test_announced_before_the_object_exists_then_verified(
    real: Settings, hooks: WebhookReceiver
) -> None:
    """Ceph announces a multipart upload at initiation: a 404 HEAD means not yet."""
    real = real.model_copy(
        update={"retry_max_attempts": 8, "retry_base_ms": 200, "retry_cap_ms": 200}
    )
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
    data = images.jpeg(800, 500)
    async with client_for(real) as client:
        grant = await client.grant(data, "image/jpeg", method="PUT")
        key = original_key("alice", grant["photo_id"])
        await announce(real, "ceph", key, len(data))
        await client.upload(grant, data, "image/jpeg")
        await hooks.wait_for(grant["photo_id"], "photo.ready")


async def test_completion_hint_verifies_without_any_notification(
    real: Settings, hooks: WebhookReceiver
) -> None:
    async with open_storage(real) as storage:
        await storage.ensure_bucket()  # no notification configuration at all
    data = images.jpeg(800, 500)
    async with client_for(real) as client:
        grant = await client.grant(data, "image/jpeg")
        # A hint before the upload is ignored, and says the photo is still pending.
        early = await client.http.post(
            f"{client.base}/v1/uploads/{grant['photo_id']}/complete", headers=client.headers
        )
        assert (early.status, (await early.json())["status"]) == (202, "pending")
        await client.upload(grant, data, "image/jpeg")
        hint = await client.http.post(
            f"{client.base}/v1/uploads/{grant['photo_id']}/complete", headers=client.headers
        )
        assert hint.status == 202
        await hooks.wait_for(grant["photo_id"], "photo.ready")
        other = Client(client.http, client.base, issue_token(JWT_SECRET, "mallory"))
        stranger = await other.http.post(
            f"{client.base}/v1/uploads/{grant['photo_id']}/complete", headers=other.headers
        )
        assert stranger.status == 404


async def test_sweep_verifies_lost_notifications_and_expires_unused_urls(
    real: Settings, hooks: WebhookReceiver
) -> None:
    real = real.model_copy(update={"sweep_after": 0.5, "sweep_interval": 0.2, "upload_url_ttl": 1})
    async with open_storage(real) as storage:
        await storage.ensure_bucket()  # notifications get "lost": none are configured
    data = images.jpeg(800, 500)
    async with client_for(real) as client:
        uploaded = await client.grant(data, "image/jpeg")
        await client.upload(uploaded, data, "image/jpeg")
        abandoned = await client.grant(data, "image/jpeg")
        await hooks.wait_for(uploaded["photo_id"], "photo.ready")
        lapsed = await hooks.wait_for(abandoned["photo_id"], "photo.rejected")
        view = await client.photo(abandoned["photo_id"])
    assert lapsed["data"]["reason"] == "upload_expired"
    assert (view["status"], view["reason"]) == ("rejected", "upload_expired")


async def test_photo_and_account_purges_remove_every_object(
    real: Settings, hooks: WebhookReceiver, unique: str
) -> None:
    real = await with_sqs(real, unique)
    data = images.jpeg(800, 500)
    async with client_for(real, "dave") as client, open_broker(real) as broker:
        first = await client.grant(data, "image/jpeg")
        await client.upload(first, data, "image/jpeg")
        second = await client.grant(data, "image/jpeg")
        await client.upload(second, data, "image/jpeg")
        for grant in (first, second):
            await hooks.wait_for(grant["photo_id"], "photo.ready")
        views = [await client.photo(g["photo_id"]) for g in (first, second)]
        topology = topology_of(real)
        await publish(
            broker,
            topology,
            PhotoDeleted(photo_id=first["photo_id"], owner_id="dave"),
            trace_id="t",
        )
        async with open_storage(real) as storage:
            for url in object_keys(views[0], real):
                await until_gone(storage, url)
            await publish(broker, topology, AccountDeleted(owner_id="dave"), trace_id="t")
            for url in object_keys(views[1], real):
                await until_gone(storage, url)
            # The already-deleted photo's objects being gone is not an error either.
            assert [k async for k in storage.list_keys("originals/")] == []
        async with open_store(real) as store:
            assert await store.get(second["photo_id"]) is None


def object_keys(view: dict[str, Any], settings: Settings) -> list[str]:
    urls = [view["original"]["url"]] + [r["url"] for r in view["renditions"].values()]
    return [urlsplit(u).path.split(f"/{settings.s3_bucket}/", 1)[1] for u in urls]


def topology_of(settings: Settings) -> Topology:
    return Topology.from_settings(settings)


async def test_verification_reads_only_the_ends_of_a_large_object(real: Settings) -> None:
    """A 20 MB upload (a photo with a long video appended) is verified from its first and
    last 64 KiB: the video's boxes are walked, its media data jumped over."""
    media = random.Random(7).randbytes(20 * 1024 * 1024)
    ftyp = struct.pack(">I", 24) + b"ftypmp42" + bytes(4) + b"mp42isom"
    moov = struct.pack(">I", 8 + 100) + b"moov" + bytes(100)
    mdat = struct.pack(">I", 8 + len(media)) + b"mdat" + media
    big = images.jpeg(640, 400) + ftyp + moov + mdat
    key = original_key("erin", "2" * 32)
    async with open_storage(real) as storage:
        await storage.ensure_bucket()
        await storage.put(key, big, content_type="image/jpeg")
        info = await storage.head(key)
        assert info is not None
        counting = CountingStorage(storage)
        photo = await recorded(real, key, len(big))
        result = await verify(counting, info, photo, real)  # type: ignore[arg-type]
    assert result.width == 640
    assert counting.bytes_read <= FIRST_READ + TAIL_READ


class CountingStorage:
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.bytes_read = 0

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        data = await self.inner.get_range(key, start, end)
        self.bytes_read += len(data)
        return data

    def stream(self, key: str, *, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        raise AssertionError("a JPEG must never be streamed")

    async def open_range(self, key: str, start: int, end: int) -> CountedBody:
        return CountedBody(self, await self.inner.open_range(key, start, end))


class CountedBody:
    """A ranged read that counts what is read from it, not what the server sent."""

    def __init__(self, counting: CountingStorage, body: Body) -> None:
        self.counting = counting
        self.body = body

    async def read(self, n: int) -> bytes:
        data = await self.body.read(n)
        self.counting.bytes_read += len(data)
        return data

    def close(self) -> None:
        self.body.close()


async def recorded(settings: Settings, key: str, size: int) -> Any:
    async with open_store(settings) as store:
        photo_id = key.rsplit("/", 1)[1]
        await store.create_pending(intent(photo_id, "erin", size, object_key=key))
        return await store.get(photo_id)
