"""Bytes sent through a still-valid upload URL after the photo was deleted: removed on
every route that can announce them, and the grant keeps counting against the quotas
until its URL has lapsed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.ingest_worker.handlers import Ingest
from services.ingest_worker.sweep import sweep_once
from shared.broker import Message
from shared.events import PhotoDeleted, UploadCompleted
from shared.keys import original_key
from shared.runtime import Meta
from shared.settings import Settings
from shared.store import PhotoStatus
from shared.tables import photos
from tests import images, s3events
from tests.gateway_harness import Gateway, gateway, grant_body, problem_of, ready_photo

Route = Callable[[Ingest, str, str], Awaitable[None]]


async def by_storage_event(ingest: Ingest, owner: str, photo_id: str) -> None:
    key = original_key(owner, photo_id)
    body = s3events.minio(ingest.res.storage.bucket, key, 1000)
    await ingest.on_storage_notification(Message(body, "minio.object-created"))


async def by_completion_hint(ingest: Ingest, owner: str, photo_id: str) -> None:
    hint = UploadCompleted(photo_id=photo_id, owner_id=owner)
    await ingest.on_upload_completed(hint, Meta(event_id="e", trace_id="t", attempt=1))


async def by_sweep(ingest: Ingest, owner: str, photo_id: str) -> None:
    await sweep_once(ingest)


ROUTES = {"storage_event": by_storage_event, "completion_hint": by_completion_hint}
ROUTES["sweep"] = by_sweep


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    async with gateway(settings.model_copy(update={"sweep_after": 3600})) as gw:
        yield gw


async def delete(gw: Gateway, photo_id: str) -> None:
    resp = await gw.client.delete(f"/v1/photos/{photo_id}", headers=gw.auth())
    assert resp.status == 204, await resp.text()


async def pending_photo(gw: Gateway) -> str:
    resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
    assert resp.status == 201, await resp.text()
    photo_id: str = (await resp.json())["photo_id"]
    return photo_id


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("was", ["pending", "ready"])
async def test_an_upload_after_deletion_is_removed_on_every_route(
    gw: Gateway, route: str, was: str
) -> None:
    ingest = Ingest(gw.res)
    if was == "pending":
        photo_id = await pending_photo(gw)
        await delete(gw, photo_id)
    else:
        photo_id, _ = await ready_photo(gw)
        await delete(gw, photo_id)
        purge = PhotoDeleted(photo_id=photo_id, owner_id="alice")
        await ingest.on_photo_deleted(purge, Meta(event_id="e", trace_id="t", attempt=1))
    key = original_key("alice", photo_id)
    # The URL is still valid: the client uploads through it after the deletion.
    await gw.res.storage.put(key, images.jpeg(64, 48), content_type="image/jpeg")

    await ROUTES[route](ingest, "alice", photo_id)

    assert await gw.res.storage.head(key) is None, "the late upload must not stay"
    record = await gw.res.store.get(photo_id)
    assert record is not None and record.status is PhotoStatus.DELETED
    await problem_of(await gw.client.get(f"/v1/photos/{photo_id}", headers=gw.auth()), 404)


async def test_the_sweep_stops_watching_a_deleted_key_once_its_url_lapsed(gw: Gateway) -> None:
    photo_id = await pending_photo(gw)
    await delete(gw, photo_id)
    watched = await gw.res.store.closed_with_live_urls(0, limit=10)
    assert [p.id for p in watched] == [photo_id]
    await lapse(gw, photo_id)
    assert await gw.res.store.closed_with_live_urls(0, limit=10) == []


async def lapse(gw: Gateway, photo_id: str) -> None:
    """Move the grant's URL expiry into the past, as time would."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with gw.res.database.transaction() as conn:
        await conn.execute(
            sa.update(photos).where(photos.c.id == photo_id).values(upload_expires_at=past)
        )


async def test_a_deleted_grant_counts_against_the_photo_quota_until_its_url_lapses(
    settings: Settings,
) -> None:
    async with gateway(settings.model_copy(update={"quota_photos": 1})) as gw:
        first = await pending_photo(gw)
        await delete(gw, first)
        resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
        body = await problem_of(resp, 409)
        assert body["code"] == "photo_quota_exceeded"
        await lapse(gw, first)
        second = await pending_photo(gw)
        await delete(gw, second)
        refused = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
        await problem_of(refused, 409)


async def test_a_deleted_grant_counts_against_the_byte_quota_until_its_url_lapses(
    settings: Settings,
) -> None:
    async with gateway(settings.model_copy(update={"quota_bytes": 150_000})) as gw:
        first = await pending_photo(gw)  # 123 456 bytes declared
        await delete(gw, first)
        resp = await gw.client.post("/v1/uploads", json=grant_body(), headers=gw.auth())
        assert (await problem_of(resp, 413))["code"] == "byte_quota_exceeded"
        await lapse(gw, first)
        await pending_photo(gw)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_the_sweep_empties_every_deleted_key_however_many_are_watched(
    settings: Settings,
    database: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("services.ingest_worker.sweep.BATCH", 2)
    options: dict[str, object] = {"sweep_after": 3600}
    if database == "postgres":
        options["database_url"] = request.getfixturevalue("postgres_url")
    async with gateway(settings.model_copy(update=options)) as gw:
        photo_ids = [await pending_photo(gw) for _ in range(5)]
        for photo_id in photo_ids:
            await delete(gw, photo_id)
            await gw.res.storage.put(original_key("alice", photo_id), b"late", content_type="x/y")
        counts = await sweep_once(Ingest(gw.res))
        assert counts["removed"] == 5
        for photo_id in photo_ids:
            assert await gw.res.storage.head(original_key("alice", photo_id)) is None
