"""Quota usage on PostgreSQL, kept as photos change (revision 0007): what a quota check
sees is what counting the owner's photos says, whatever happened to them and on however
many replicas at once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from shared.events import Envelope, PhotoDeleted
from shared.facts import PhotoFacts
from shared.reservations import NOTHING, usage_of
from shared.settings import Settings
from shared.store import PhotoStatus, Store, Usage, Verified, open_store
from shared.tables import photos
from tests.harness import intent

OWNERS = ("ann", "bob", "cyd")
FACTS = PhotoFacts(sha256="0" * 64, placeholder="p")


class Seen(Exception):
    pass


@pytest.fixture
async def postgres(settings: Settings, postgres_url: str) -> Settings:
    return settings.model_copy(update={"database_url": postgres_url})


@pytest.fixture
async def store(postgres: Settings) -> AsyncIterator[Store]:
    async with open_store(postgres) as opened:
        yield opened


async def seen_by_a_grant(store: Store, owner: str) -> Usage:
    """The usage a grant's refusal stands on (its quota check says no to anything)."""
    seen: list[Usage] = []

    def check(usage: Usage) -> None:
        seen.append(usage)
        raise Seen

    with pytest.raises(Seen):
        await store.reserve(owner, [intent(uuid.uuid4().hex, owner, 1)], check)
    return seen[-1]


async def counted(store: Store, owner: str) -> Usage:
    """The owner's usage by counting their photos (the rule SQLite uses)."""
    async with store.db.transaction() as conn:
        return (await usage_of(conn, [owner])).get(owner, NOTHING)


def accept(usage: Usage) -> None:
    pass


async def lapse_unnoticed(store: Store, photo_id: str) -> None:
    """Let the photo's URL lapse as time does: no write recomputes whether it counts."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with store.db.transaction() as conn:
        await conn.execute(sa.text("ALTER TABLE photos DISABLE TRIGGER photos_counted"))
        await conn.execute(
            sa.update(photos).where(photos.c.id == photo_id).values(upload_expires_at=past)
        )
        await conn.execute(sa.text("ALTER TABLE photos ENABLE TRIGGER photos_counted"))


def envelope(photo_id: str, owner: str) -> Envelope:
    return Envelope.wrap(PhotoDeleted(photo_id=photo_id, owner_id=owner), trace_id="t")


class Life:
    """Random things happening to random photos of a few owners."""

    def __init__(self, store: Store, rng: random.Random) -> None:
        self.store, self.rng = store, rng
        self.photos: dict[str, tuple[str, PhotoStatus]] = {}

    async def step(self) -> None:
        moves = (self.grant, self.intent, self.verify, self.ready, self.reject, self.delete)
        await self.rng.choice([*moves, self.grant, self.lapse, self.lapse_written])()

    def pick(self, *statuses: PhotoStatus) -> tuple[str, str, PhotoStatus] | None:
        found = [(p, o, s) for p, (o, s) in self.photos.items() if s in statuses]
        return self.rng.choice(found) if found else None

    def new(self) -> tuple[str, str, dict[str, object]]:
        photo_id, owner = uuid.uuid4().hex, self.rng.choice(OWNERS)
        fields: dict[str, object] = {}
        if self.rng.random() < 0.3:
            fields |= {"upload_id": "multipart", "part_size": 5 << 20}
        if self.rng.random() < 0.1:
            fields["upload_expires_at"] = datetime.now(UTC) - timedelta(minutes=1)
        self.photos[photo_id] = (owner, PhotoStatus.PENDING)
        return photo_id, owner, fields

    async def grant(self) -> None:
        photo_id, owner, fields = self.new()
        size = self.rng.randrange(1, 10_000)
        await self.store.reserve(owner, [intent(photo_id, owner, size, **fields)], accept)

    async def intent(self) -> None:  # the path that records one intent on its own
        photo_id, owner, fields = self.new()
        await self.store.create_pending(intent(photo_id, owner, 77, **fields))

    async def verify(self) -> None:
        if picked := self.pick(PhotoStatus.PENDING):
            size = self.rng.randrange(1, 10_000)
            done = Verified(content_type="image/jpeg", size=size, width=1, height=1, etag=None)
            photo_id, owner, status = picked
            await self.store.mark_verified(
                photo_id, done, observed=status, envelope=envelope(photo_id, owner)
            )
            self.photos[photo_id] = (owner, PhotoStatus.VERIFIED)

    async def ready(self) -> None:
        if picked := self.pick(PhotoStatus.VERIFIED):
            photo_id, owner, status = picked
            await self.store.mark_ready(
                photo_id,
                observed=status,
                width=1,
                height=1,
                made=[],
                envelope=envelope(photo_id, owner),
                facts=FACTS,
            )
            self.photos[photo_id] = (owner, PhotoStatus.READY)

    async def reject(self) -> None:
        live = (PhotoStatus.PENDING, PhotoStatus.VERIFIED, PhotoStatus.READY)
        if picked := self.pick(*live):
            photo_id, owner, status = picked
            await self.store.mark_rejected(
                photo_id,
                observed=status,
                reason="corrupt",
                detail="x",
                envelope=envelope(photo_id, owner),
            )
            self.photos[photo_id] = (owner, PhotoStatus.REJECTED)

    async def delete(self) -> None:
        if picked := self.pick(*(s for s in PhotoStatus if s is not PhotoStatus.DELETED)):
            photo_id, owner, _ = picked
            await self.store.mark_deleted(photo_id, owner, envelope(photo_id, owner))
            self.photos[photo_id] = (owner, PhotoStatus.DELETED)

    async def lapse(self) -> None:
        if picked := self.pick(PhotoStatus.PENDING, PhotoStatus.DELETED):
            await lapse_unnoticed(self.store, picked[0])

    async def lapse_written(self) -> None:  # the URL's expiry moved by a write
        if picked := self.pick(PhotoStatus.PENDING, PhotoStatus.DELETED):
            past = datetime.now(UTC) - timedelta(seconds=1)
            which = photos.c.id == picked[0]
            async with self.store.db.transaction() as conn:
                await conn.execute(sa.update(photos).where(which).values(upload_expires_at=past))


async def test_the_usage_a_grant_sees_is_the_count_of_the_owners_photos_whatever_they_went_through(
    store: Store,
) -> None:
    life = Life(store, random.Random(13))
    for round_ in range(6):
        for _ in range(40):
            await life.step()
        if round_ == 3:
            await store.forget_owner("cyd")
        for owner in OWNERS:
            assert await seen_by_a_grant(store, owner) == await counted(store, owner)
    assert await seen_by_a_grant(store, "ann") != NOTHING  # the mix did count something


async def test_an_upload_whose_url_lapsed_frees_its_place_for_the_next_grant(
    store: Store,
) -> None:
    await store.reserve("ann", [intent("a" * 32, "ann", 100)], accept)
    assert await seen_by_a_grant(store, "ann") == Usage(1, 100, 1)
    await lapse_unnoticed(store, "a" * 32)
    assert await seen_by_a_grant(store, "ann") == NOTHING


async def test_usage_stays_exact_when_two_replicas_grant_and_move_one_owners_photos_at_once(
    postgres: Settings,
) -> None:
    async with open_store(postgres) as one, open_store(postgres) as other:
        ids = [uuid.uuid4().hex for _ in range(40)]
        await asyncio.gather(*(one.reserve("ann", [intent(i, "ann", 10)], accept) for i in ids))
        deleting = (other.mark_deleted(i, "ann", envelope(i, "ann")) for i in ids[:20])
        granting = (
            one.reserve("ann", [intent(uuid.uuid4().hex, "ann", 5, upload_id="u")], accept)
            for _ in range(20)
        )
        await asyncio.gather(*deleting, *granting)
        assert await seen_by_a_grant(other, "ann") == await counted(one, "ann")
        assert await counted(one, "ann") == Usage(60, 500, 60)
