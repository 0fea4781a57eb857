"""The metadata store and its outbox, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from shared.errors import DatabaseUnavailable, PermanentError
from shared.events import Envelope, PhotoReady, PhotoRejected, PhotoVerified, announcement
from shared.migrations import MIGRATIONS, migrate
from shared.settings import Settings
from shared.store import (
    ImageFacts,
    NewPhoto,
    PhotoFacts,
    PhotoStatus,
    RenditionRecord,
    Store,
    create_engine,
    open_store,
)


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


FACTS = ImageFacts("image/jpeg", 1234, 10, 20)


def verified(photo_id: str) -> Envelope:
    event = PhotoVerified(
        photo_id=photo_id,
        owner_id="alice",
        bucket="b",
        object_key="k",
        content_type="image/jpeg",
        size=1234,
        width=10,
        height=20,
    )
    return announcement(event, photo_id=photo_id, trace_id="trace")


def ready(photo_id: str) -> Envelope:
    event = PhotoReady(photo_id=photo_id, owner_id="alice", width=10, height=20, renditions=())
    return announcement(event, photo_id=photo_id, trace_id="trace")


def rejected(photo_id: str) -> Envelope:
    event = PhotoRejected(photo_id=photo_id, owner_id="alice", reason="corrupt", detail="x")
    return announcement(event, photo_id=photo_id, trace_id="trace")


async def unsent_ids(store: Store) -> set[str]:
    return {e.id for e in await store.claim_unsent(older_than_s=-1, lease_s=0)}


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


async def test_state_only_moves_forward_and_each_step_is_announced_once(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_verified(photo.id, facts=FACTS, etag="e1", announce=verified(photo.id))
    # A duplicate verification neither transitions nor queues a second event.
    assert not await store.mark_verified(
        photo.id, facts=ImageFacts("image/png", 1, 1, 1), etag=None, announce=verified(photo.id)
    )
    made = [RenditionRecord("thumb", "k/thumb.webp", 5, 10, "image/webp", 99)]
    assert await store.mark_ready(
        photo.id, width=10, height=20, made=made, announce=ready(photo.id)
    )
    # A late rejection from a handler that only rejects pending photos changes nothing.
    assert not await store.mark_rejected(
        photo.id, reason="corrupt", detail="late", announce=rejected(photo.id)
    )
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.content_type, record.width, record.etag) == (
        PhotoStatus.READY,
        "image/jpeg",
        10,
        "e1",
    )
    assert await store.renditions(photo.id) == made
    assert {verified(photo.id).id, ready(photo.id).id} <= await unsent_ids(store)
    assert rejected(photo.id).id not in await unsent_ids(store)


async def test_a_refused_transition_writes_no_renditions(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    made = [RenditionRecord("thumb", "k", 1, 1, "image/webp", 1)]
    assert not await store.mark_ready(
        photo.id, width=1, height=1, made=made, announce=ready(photo.id)
    )
    assert await store.renditions(photo.id) == []


async def test_rejection_records_the_reason(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_rejected(
        photo.id, reason="type_mismatch", detail="png not jpeg", announce=rejected(photo.id)
    )
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.reason, record.reason_detail) == (
        PhotoStatus.REJECTED,
        "type_mismatch",
        "png not jpeg",
    )


async def test_outbox_leases_events_and_forgets_sent_ones(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    envelope = verified(photo.id)
    await store.mark_verified(photo.id, facts=FACTS, etag=None, announce=envelope)
    # Too young for the relay: the handler's own send normally takes it.
    assert envelope.id not in {e.id for e in await store.claim_unsent(older_than_s=60, lease_s=30)}
    claimed = [
        e for e in await store.claim_unsent(older_than_s=-1, lease_s=30) if e.id == envelope.id
    ]
    assert claimed == [envelope]
    # Leased: a second relay does not take it too.
    assert envelope.id not in await unsent_ids(store)
    await store.forget_sent(envelope.id)
    assert envelope.id not in {
        e.id for e in await store.claim_unsent(older_than_s=-1, lease_s=-100)
    }


async def test_constraint_violation_is_permanent(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    clash = NewPhoto(
        uuid.uuid4().hex,
        "bob",
        photo.object_key,
        "b.jpg",
        "image/jpeg",
        1,
        photo.upload_expires_at,
        "t",
    )
    with pytest.raises(PermanentError, match="refused"):
        await store.create_pending(clash)


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


async def test_a_statement_that_runs_too_long_fails_clearly(
    settings: Settings, postgres_url: str
) -> None:
    slow = settings.model_copy(update={"database_url": postgres_url, "database_timeout": 0.5})
    async with open_store(slow) as store:
        with pytest.raises(DatabaseUnavailable, match="metadata store failed"):
            async with store._tx() as conn:
                await conn.execute(sa.text("SELECT pg_sleep(5)"))


async def test_facts_are_recorded_with_the_ready_state(store: Store) -> None:
    photo = NewPhoto(**{**new_photo().__dict__, "keep_location": True})
    await store.create_pending(photo)
    await store.mark_verified(photo.id, facts=FACTS, etag=None, announce=verified(photo.id))
    taken = datetime(2024, 5, 1, 12, 3, 22, tzinfo=UTC)
    facts = PhotoFacts(
        sha256="ab" * 32,
        placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w",
        taken_at=taken,
        taken_at_local="2024-05-01T14:03:22+02:00",
        camera_make="Fujifilm",
        iso=200,
        gps_latitude=48.85,
        gps_longitude=2.35,
    )
    await store.mark_ready(
        photo.id, width=10, height=20, made=[], announce=ready(photo.id), facts=facts
    )
    record = await store.get(photo.id)
    assert record is not None and record.facts is not None
    assert record.keep_location is True
    assert (
        record.facts.sha256,
        record.facts.placeholder,
        record.facts.taken_at,
        record.facts.camera_make,
    ) == (
        facts.sha256,
        facts.placeholder,
        taken,
        "Fujifilm",
    )
    assert (record.facts.taken_at_local, record.facts.iso, record.facts.gps_latitude) == (
        "2024-05-01T14:03:22+02:00",
        200,
        48.85,
    )
