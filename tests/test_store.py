"""The metadata store on SQLite and on real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.migrations import MIGRATIONS, migrate
from shared.settings import Settings
from shared.store import NewPhoto, PhotoStatus, RenditionRecord, Store, create_engine, open_store


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Store]:
    if request.param == "postgres":
        settings = settings.model_copy(
            update={"database_url": request.getfixturevalue("postgres_url")}
        )
    async with open_store(settings) as opened:
        yield opened


def new_photo(owner: str = "alice") -> NewPhoto:
    pid = uuid.uuid4().hex
    return NewPhoto(
        pid,
        owner,
        f"originals/x/{pid}",
        "a.jpg",
        "image/jpeg",
        1234,
        datetime.now(UTC) + timedelta(minutes=15),
        "trace",
    )


async def test_intent_is_recorded_once(store: Store) -> None:
    photo = new_photo()
    assert await store.create_pending(photo) is True
    assert await store.create_pending(photo) is False
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.owner_id, record.declared_size) == (
        PhotoStatus.PENDING,
        "alice",
        1234,
    )
    assert record.created_at.tzinfo is not None


async def test_state_only_moves_forward(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_verified(
        photo.id, content_type="image/jpeg", size=1234, width=10, height=20, etag="e"
    )
    # A duplicate verification is a no-op, not a second transition.
    assert not await store.mark_verified(
        photo.id, content_type="image/png", size=1, width=1, height=1, etag=None
    )
    made = [RenditionRecord("thumb", "k/thumb.webp", 5, 10, "image/webp", 99)]
    assert await store.mark_ready(photo.id, width=10, height=20, made=made)
    # Ready photos cannot be rejected by a late message.
    assert not await store.mark_rejected(photo.id, reason="corrupt", detail="late")
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.content_type, record.width) == (
        PhotoStatus.READY,
        "image/jpeg",
        10,
    )
    assert await store.renditions(photo.id) == made


async def test_rendition_records_are_upserts(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    await store.mark_verified(
        photo.id, content_type="image/jpeg", size=1, width=1, height=1, etag=None
    )
    first = [RenditionRecord("thumb", "k", 1, 1, "image/webp", 1)]
    again = [RenditionRecord("thumb", "k", 2, 2, "image/webp", 2)]
    await store.mark_ready(photo.id, width=1, height=1, made=first)
    await store.mark_ready(photo.id, width=1, height=1, made=again)
    assert await store.renditions(photo.id) == again


async def test_rejection_records_the_reason(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_rejected(photo.id, reason="type_mismatch", detail="png not jpeg")
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.reason, record.reason_detail) == (
        PhotoStatus.REJECTED,
        "type_mismatch",
        "png not jpeg",
    )


async def test_migrations_are_recorded_and_not_reapplied(store: Store) -> None:
    assert await migrate(store._engine) == []
    assert len(MIGRATIONS) >= 1


async def test_unreachable_database_reads_as_not_ready(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    store = Store(create_engine(broken.effective_database_url))
    try:
        assert await store.ping() is False
    finally:
        await store.close()
