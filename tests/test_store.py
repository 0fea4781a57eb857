"""The metadata store and its outbox, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import shared.outbox
from shared.db import Database, create_engine
from shared.errors import DatabaseUnavailable, PermanentError
from shared.events import (
    Envelope,
    PhotoDeleted,
    PhotoReady,
    PhotoRejected,
    PhotoVerified,
    outcome_envelope,
)
from shared.facts import Camera, Exposure, Location, PhotoFacts
from shared.memory_broker import MemoryBroker
from shared.migrations import upgrade
from shared.outbox import Outbox
from shared.records import check_transition
from shared.settings import Settings
from shared.store import (
    IllegalTransition,
    NewPhoto,
    PhotoStatus,
    RenditionRecord,
    Store,
    Verified,
    open_store,
)
from shared.topology import Topology

PENDING, VERIFIED, READY = PhotoStatus.PENDING, PhotoStatus.VERIFIED, PhotoStatus.READY
REJECTED, DELETED = PhotoStatus.REJECTED, PhotoStatus.DELETED


@pytest.fixture
async def store(on_both: Settings) -> AsyncIterator[Store]:
    async with open_store(on_both) as opened:
        yield opened


@pytest.fixture
def outbox(store: Store, settings: Settings) -> Outbox:
    return Outbox(store.db, MemoryBroker(), Topology.from_settings(settings))


def new_photo(owner: str = "alice", *, keep_location: bool = False) -> NewPhoto:
    pid = uuid.uuid4().hex
    return NewPhoto(
        id=pid,
        owner_id=owner,
        object_key=f"originals/x/{pid}",
        filename="a.jpg",
        declared_type="image/jpeg",
        declared_size=1234,
        upload_expires_at=datetime.now(UTC) + timedelta(minutes=15),
        trace_id="trace",
        keep_location=keep_location,
    )


def rendition(name: str, key: str = "k") -> RenditionRecord:
    return RenditionRecord(
        name=name, object_key=key, width=5, height=10, content_type="image/webp", size=99
    )


FACTS = PhotoFacts(sha256="0" * 64, placeholder="p")
VERIFIED_JPEG = Verified(content_type="image/jpeg", size=1234, width=10, height=20, etag="e1")


def verified(photo_id: str) -> Envelope:
    event = PhotoVerified(
        photo_id=photo_id,
        owner_id="alice",
        object_key="k",
        etag="e1",
        content_type="image/jpeg",
        size=1234,
        keep_location=False,
    )
    return outcome_envelope(event, photo_id=photo_id, trace_id="trace")


def ready(photo_id: str) -> Envelope:
    event = PhotoReady(
        photo_id=photo_id, owner_id="alice", width=10, height=20, renditions=(), facts=FACTS
    )
    return outcome_envelope(event, photo_id=photo_id, trace_id="trace")


def rejected(photo_id: str) -> Envelope:
    event = PhotoRejected(photo_id=photo_id, owner_id="alice", reason="corrupt", detail="x")
    return outcome_envelope(event, photo_id=photo_id, trace_id="trace")


async def unsent_ids(outbox: Outbox) -> set[str]:
    return {e.id for e in await outbox.claim_unpublished(older_than_s=-1, lease_s=0)}


async def verified_photo(store: Store) -> NewPhoto:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_verified(
        photo.id, VERIFIED_JPEG, observed=PENDING, envelope=verified(photo.id)
    )
    return photo


# Written out rather than read from TRANSITIONS, so a change to the table shows up here.
ALLOWED = {
    (PENDING, VERIFIED),
    (VERIFIED, READY),
    (PENDING, REJECTED),
    (VERIFIED, REJECTED),
    (READY, REJECTED),  # replaced after verification
    (PENDING, DELETED),
    (VERIFIED, DELETED),
    (READY, DELETED),
    (REJECTED, DELETED),
}


@pytest.mark.parametrize(("observed", "to"), list(itertools.product(PhotoStatus, PhotoStatus)))
def test_only_the_transitions_in_the_table_are_allowed(
    observed: PhotoStatus, to: PhotoStatus
) -> None:
    if (observed, to) in ALLOWED:
        check_transition(observed, to)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(observed, to)


async def test_intent_is_recorded_once(store: Store) -> None:
    photo = new_photo()
    assert await store.create_pending(photo) is True
    assert await store.create_pending(photo) is False
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.owner_id, record.declared_size) == (PENDING, "alice", 1234)
    assert record.created_at.tzinfo is not None


async def test_state_only_moves_forward_and_each_step_is_announced_once(
    store: Store, outbox: Outbox
) -> None:
    photo = await verified_photo(store)
    # A duplicate verification that read the photo as pending neither moves it nor queues
    # a second event.
    other = Verified(content_type="image/png", size=1, width=1, height=1, etag=None)
    assert not await store.mark_verified(
        photo.id, other, observed=PENDING, envelope=verified(photo.id)
    )
    made = [rendition("thumb", "k/thumb.webp")]
    assert await store.mark_ready(
        photo.id, observed=VERIFIED, width=10, height=20, made=made, envelope=ready(photo.id),
        facts=FACTS,
    )  # fmt: skip
    # A late rejection from a handler that read the photo as pending changes nothing.
    assert not await store.mark_rejected(
        photo.id, observed=PENDING, reason="corrupt", detail="late", envelope=rejected(photo.id)
    )
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.content_type, record.width, record.etag, record.facts) == (
        READY,
        "image/jpeg",
        10,
        "e1",
        FACTS,
    )
    assert list(record.renditions) == sorted(made, key=lambda r: r.name)
    assert {verified(photo.id).id, ready(photo.id).id} <= await unsent_ids(outbox)
    assert rejected(photo.id).id not in await unsent_ids(outbox)


async def test_a_sweep_that_read_pending_cannot_reject_a_photo_verified_meanwhile(
    store: Store, outbox: Outbox
) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    seen_by_sweep = await store.get(photo.id)
    assert seen_by_sweep is not None and seen_by_sweep.status is PENDING
    assert await store.mark_verified(
        photo.id, VERIFIED_JPEG, observed=PENDING, envelope=verified(photo.id)
    )
    assert not await store.mark_rejected(
        photo.id,
        observed=seen_by_sweep.status,
        reason="upload_expired",
        detail="the upload URL expired unused",
        envelope=rejected(photo.id),
    )
    record = await store.get(photo.id)
    assert record is not None and (record.status, record.reason) == (VERIFIED, None)
    assert rejected(photo.id).id not in await unsent_ids(outbox)


async def test_a_ready_photo_replaced_after_verification_is_rejected(store: Store) -> None:
    photo = await verified_photo(store)
    await store.mark_ready(
        photo.id, observed=VERIFIED, width=1, height=1, made=[], envelope=ready(photo.id),
        facts=FACTS,
    )  # fmt: skip
    assert await store.mark_rejected(
        photo.id, observed=READY, reason="replaced", detail="x", envelope=rejected(photo.id)
    )
    record = await store.get(photo.id)
    assert record is not None and (record.status, record.reason) == (REJECTED, "replaced")


async def test_an_illegal_move_is_a_programming_error_and_changes_nothing(
    store: Store, outbox: Outbox
) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    with pytest.raises(IllegalTransition, match="pending to ready"):
        await store.mark_ready(
            photo.id, observed=PENDING, width=1, height=1, made=[rendition("thumb")],
            envelope=ready(photo.id), facts=FACTS,
        )  # fmt: skip
    record = await store.get(photo.id)
    assert record is not None and record.status is PENDING
    assert record.renditions == ()
    assert ready(photo.id).id not in await unsent_ids(outbox)


async def test_a_refused_transition_writes_no_renditions(store: Store) -> None:
    photo = await verified_photo(store)
    await store.mark_rejected(
        photo.id, observed=VERIFIED, reason="corrupt", detail="x", envelope=rejected(photo.id)
    )
    assert not await store.mark_ready(
        photo.id, observed=VERIFIED, width=1, height=1, made=[rendition("thumb")],
        envelope=ready(photo.id), facts=FACTS,
    )  # fmt: skip
    record = await store.get(photo.id)
    assert record is not None and record.renditions == ()


async def test_rejection_records_the_reason(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_rejected(
        photo.id,
        observed=PENDING,
        reason="type_mismatch",
        detail="png not jpeg",
        envelope=rejected(photo.id),
    )
    record = await store.get(photo.id)
    assert record is not None
    assert (record.status, record.reason, record.reason_detail) == (
        REJECTED,
        "type_mismatch",
        "png not jpeg",
    )


async def test_deletion_reaches_any_status_but_deleted(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    assert await store.mark_rejected(
        photo.id, observed=PENDING, reason="corrupt", detail="x", envelope=rejected(photo.id)
    )
    deleted = Envelope.wrap(PhotoDeleted(photo_id=photo.id, owner_id="alice"), trace_id="t")
    assert await store.mark_deleted(photo.id, "alice", deleted) is True
    assert await store.mark_deleted(photo.id, "alice", deleted) is False
    record = await store.get(photo.id)
    assert record is not None and record.status is DELETED


async def test_each_photo_reads_back_its_own_renditions_by_name(store: Store) -> None:
    first, second, bare = [await verified_photo(store) for _ in range(3)]
    made = {
        first.id: [rendition("preview", "p1"), rendition("thumb", "t1")],
        second.id: [rendition("thumb", "t2"), rendition("big", "b2")],
    }
    for photo_id, renditions in made.items():
        await store.mark_ready(
            photo_id, observed=VERIFIED, width=1, height=1, made=renditions,
            envelope=ready(photo_id), facts=FACTS,
        )  # fmt: skip
    records = [await store.get(p.id) for p in (first, second, bare)]
    assert [r and r.renditions for r in records] == [
        tuple(made[first.id]),
        (made[second.id][1], made[second.id][0]),
        (),
    ]


async def test_outbox_leases_events_and_forgets_sent_ones(store: Store, outbox: Outbox) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    envelope = verified(photo.id)
    await store.mark_verified(photo.id, VERIFIED_JPEG, observed=PENDING, envelope=envelope)
    # Too young for the relay: the handler's own send normally takes it.
    assert envelope.id not in {
        e.id for e in await outbox.claim_unpublished(older_than_s=60, lease_s=30)
    }
    claimed = [
        e
        for e in await outbox.claim_unpublished(older_than_s=-1, lease_s=30)
        if e.id == envelope.id
    ]
    assert claimed == [envelope]
    # Leased: a second relay does not take it too.
    assert envelope.id not in await unsent_ids(outbox)
    await outbox.forget_published(envelope.id)
    assert envelope.id not in {
        e.id for e in await outbox.claim_unpublished(older_than_s=-1, lease_s=-100)
    }


class HourBehind(datetime):
    """The clock of a host that runs an hour late."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime.now(tz) - timedelta(hours=1)


async def test_an_event_queued_on_a_host_whose_clock_is_late_is_not_taken_for_left_behind(
    store: Store, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    envelope = verified(photo.id)
    with monkeypatch.context() as late:
        late.setattr(shared.outbox, "datetime", HourBehind)
        await store.mark_verified(photo.id, VERIFIED_JPEG, observed=PENDING, envelope=envelope)
    # The relay (this host, on time) sees the event as just queued, as it is.
    unsent = await outbox.claim_unpublished(older_than_s=60, lease_s=30)
    assert envelope.id not in {e.id for e in unsent}
    count, oldest_s = await outbox.backlog()
    assert count >= 1 and oldest_s < 60


async def test_constraint_violation_is_permanent(store: Store) -> None:
    photo = new_photo()
    await store.create_pending(photo)
    clash = new_photo("bob").model_copy(update={"object_key": photo.object_key})
    with pytest.raises(PermanentError, match="refused"):
        await store.create_pending(clash)


async def test_migrations_are_recorded_and_not_reapplied(store: Store) -> None:
    assert await upgrade(store.db.engine) == []


async def test_unreachable_database_reads_as_not_ready() -> None:
    db = Database(create_engine("postgresql://nobody@127.0.0.1:1/none"))
    try:
        assert await db.ping() is False
    finally:
        await db.close()


async def test_a_statement_that_runs_too_long_fails_clearly(
    settings: Settings, postgres_url: str
) -> None:
    slow = settings.model_copy(update={"database_url": postgres_url, "database_timeout": 0.5})
    async with open_store(slow) as store:
        with pytest.raises(DatabaseUnavailable, match="metadata store failed"):
            async with store.db.transaction() as conn:
                await conn.execute(sa.text("SELECT pg_sleep(5)"))


async def test_facts_are_recorded_with_the_ready_state(store: Store) -> None:
    photo = new_photo(keep_location=True)
    await store.create_pending(photo)
    await store.mark_verified(
        photo.id, VERIFIED_JPEG, observed=PENDING, envelope=verified(photo.id)
    )
    taken = datetime(2024, 5, 1, 12, 3, 22, tzinfo=UTC)
    facts = PhotoFacts(
        sha256="ab" * 32,
        placeholder="3OcRJYB4d3h/iIeHeEh3eIhw+j2w",
        taken_at=taken,
        taken_at_local="2024-05-01T14:03:22+02:00",
        camera=Camera(make="Fujifilm"),
        exposure=Exposure(iso=200),
        location=Location(latitude=48.85, longitude=2.35),
    )
    await store.mark_ready(
        photo.id, observed=VERIFIED, width=10, height=20, made=[], envelope=ready(photo.id),
        facts=facts,
    )  # fmt: skip
    record = await store.get(photo.id)
    assert record is not None and record.keep_location is True
    assert record.facts == facts
    # The columns queries filter on are written from the same facts.
    assert await store.ready_with_sha256("alice", "ab" * 32) == record
    listed = await store.owner_page(
        "alice", limit=10, taken_from=taken, taken_to=taken + timedelta(seconds=1)
    )
    assert [row["id"] for row in listed] == [photo.id]
