"""Photo records: photos and their renditions, and the moves between their states.

A photo's status only moves along `shared.records.TRANSITIONS`. Each move is a
compare-and-set from the status the caller observed: the UPDATE names that status, so a
caller acting on a stale read changes nothing. A sweep that read a photo as pending
cannot reject it once it was verified meanwhile, and a duplicate or late message never
moves a photo back. The event announcing a move is queued in the
outbox in the same transaction, so it goes out exactly when the move happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Database, open_database
from shared.events import Envelope
from shared.facts import PhotoFacts
from shared.listing import PageRow, owner_page, page_rows
from shared.outbox import queued
from shared.records import (
    TRANSITIONS,
    IllegalTransition,
    NewPhoto,
    PhotoRecord,
    PhotoStatus,
    RenditionRecord,
    Verified,
    check_transition,
)
from shared.reservations import Check, Reservations, Usage
from shared.settings import Settings
from shared.tables import photos

# The record shapes are part of the store's interface; callers import them from here.
__all__ = [
    "TRANSITIONS",
    "Check",
    "IllegalTransition",
    "NewPhoto",
    "PageRow",
    "PhotoRecord",
    "PhotoStatus",
    "RenditionRecord",
    "Store",
    "Usage",
    "Verified",
    "open_store",
]
_S = PhotoStatus


def _record(row: sa.Row[Any]) -> PhotoRecord:
    return PhotoRecord.model_validate(row._asdict())


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._reservations = Reservations(db)

    async def create_pending(self, photo: NewPhoto) -> bool:
        """Record an upload intent; False if the photo was already recorded."""
        async with self.db.transaction() as conn:
            result = await conn.execute(self._pending_insert(photo))
        return bool(result.rowcount)

    def _pending_insert(self, photo: NewPhoto) -> Any:
        now = datetime.now(UTC)
        return (
            self.db.insert(photos)
            .values(
                **photo.model_dump(),
                status=PhotoStatus.PENDING.value,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def get(self, photo_id: str) -> PhotoRecord | None:
        async with self.db.transaction() as conn:
            row = (await conn.execute(sa.select(photos).where(photos.c.id == photo_id))).first()
        return _record(row) if row else None

    async def pending_since(self, older_than_s: float, *, limit: int) -> list[PhotoRecord]:
        """Pending photos recorded more than older_than_s ago, oldest first."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        query = (
            sa.select(photos)
            .where(photos.c.status == PhotoStatus.PENDING.value, photos.c.created_at < cutoff)
            .order_by(photos.c.created_at)
            .limit(limit)
        )
        async with self.db.transaction() as conn:
            return [_record(row) for row in (await conn.execute(query)).all()]

    async def verified(self, *, limit: int) -> list[PhotoRecord]:
        """Photos verified and not yet rendered, oldest first."""
        query = (
            sa.select(photos)
            .where(photos.c.status == PhotoStatus.VERIFIED.value)
            .order_by(photos.c.updated_at)
            .limit(limit)
        )
        async with self.db.transaction() as conn:
            return [_record(row) for row in (await conn.execute(query)).all()]

    async def closed_with_live_urls(
        self, grace_s: float, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[PhotoRecord]:
        """Deleted and rejected photos whose upload URL lapsed less than grace_s ago (or
        not at all): bytes may still arrive under their keys. Soonest to lapse first,
        keyset-paged on (upload_expires_at, id) from `after`."""
        c = photos.c
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
        query = sa.select(photos).where(
            c.status.in_([PhotoStatus.DELETED.value, PhotoStatus.REJECTED.value]),
            c.upload_expires_at > cutoff,
        )
        if after is not None:
            expires, photo_id = after
            query = query.where(
                sa.or_(
                    c.upload_expires_at > expires,
                    sa.and_(c.upload_expires_at == expires, c.id > photo_id),
                )
            )
        query = query.order_by(c.upload_expires_at, c.id).limit(limit)
        async with self.db.transaction() as conn:
            return [_record(row) for row in (await conn.execute(query)).all()]

    async def forget_owner(self, owner_id: str) -> int:
        """Delete every record of an owner (account deletion); returns photos removed."""
        async with self.db.transaction() as conn:
            result = await conn.execute(sa.delete(photos).where(photos.c.owner_id == owner_id))
        return int(result.rowcount)

    async def _move(
        self,
        conn: AsyncConnection,
        which: sa.ColumnElement[bool],
        observed: Collection[PhotoStatus],
        to: PhotoStatus,
        envelope: Envelope | None,
        **values: Any,
    ) -> int:
        """Move the photos `which` selects, if still in an `observed` status, and queue
        `envelope` if any moved: both or neither. Returns how many moved."""
        for status in observed:
            check_transition(status, to)
        stmt = (
            sa.update(photos)
            .where(which, photos.c.status.in_([s.value for s in observed]))
            .values(status=to.value, **values)  # and updated_at, by its onupdate
        )
        moved = int((await conn.execute(stmt)).rowcount)
        if moved and envelope is not None:
            await conn.execute(queued(envelope))
        return moved

    async def mark_verified(
        self, photo_id: str, verified: Verified, *, observed: PhotoStatus, envelope: Envelope
    ) -> bool:
        async with self.db.transaction() as conn:
            which = photos.c.id == photo_id
            values = verified.model_dump()
            return bool(await self._move(conn, which, [observed], _S.VERIFIED, envelope, **values))

    async def mark_rejected(
        self,
        photo_id: str,
        *,
        observed: PhotoStatus,
        reason: str,
        detail: str,
        envelope: Envelope,
    ) -> bool:
        values = {"reason": reason, "reason_detail": detail[:2000]}
        async with self.db.transaction() as conn:
            which = photos.c.id == photo_id
            return bool(await self._move(conn, which, [observed], _S.REJECTED, envelope, **values))

    async def mark_ready(
        self,
        photo_id: str,
        *,
        observed: PhotoStatus,
        width: int,
        height: int,
        made: Sequence[RenditionRecord],
        envelope: Envelope,
        facts: PhotoFacts,
    ) -> bool:
        """Move to ready and record its renditions and facts in one transaction."""
        values = {
            "width": width,
            "height": height,
            "facts": facts.model_dump(mode="json"),
            # Also in columns of their own, written from the same facts: queries filter
            # on them (dedupe by digest, listing by date).
            "sha256": facts.sha256,
            "taken_at": facts.taken_at,
            "renditions": [r.model_dump() for r in sorted(made, key=lambda r: r.name)] or None,
        }
        async with self.db.transaction() as conn:
            which = photos.c.id == photo_id
            return bool(await self._move(conn, which, [observed], _S.READY, envelope, **values))

    async def mark_deleted(self, photo_id: str, owner_id: str, envelope: Envelope) -> bool:
        """Take one photo out of the API and queue its purge, both or neither."""
        which = sa.and_(photos.c.id == photo_id, photos.c.owner_id == owner_id)
        async with self.db.transaction() as conn:
            return bool(await self._move(conn, which, _into(_S.DELETED), _S.DELETED, envelope))

    async def mark_owner_deleted(self, owner_id: str, envelope: Envelope) -> int:
        """Take every photo of an owner out of the API and queue the account purge (even
        with no photos left: their storage may still hold objects)."""
        which = photos.c.owner_id == owner_id
        async with self.db.transaction() as conn:
            moved = await self._move(conn, which, _into(_S.DELETED), _S.DELETED, None)
            await conn.execute(queued(envelope))
        return moved

    # --- gateway queries ---

    async def owner_page(self, owner_id: str, *, limit: int, **filters: Any) -> list[PageRow]:
        """The keys of a listing page of the owner's photos (see shared.listing)."""
        return await owner_page(self.db, owner_id, limit=limit, **filters)

    async def page_rows(self, owner_id: str, ids: Sequence[str]) -> list[PageRow]:
        """The listing's rows of these photos of the owner's (see shared.listing)."""
        return await page_rows(self.db, owner_id, ids)

    async def reserve(self, owner_id: str, intents: Sequence[NewPhoto], check: Check) -> None:
        """Record upload intents only if `check(usage)` lets them through, atomically per
        owner across replicas (see shared.reservations)."""
        await self._reservations.reserve(owner_id, intents, check)

    async def ready_with_sha256(
        self, owner_id: str, sha256: str, album_id: str | None = None
    ) -> PhotoRecord | None:
        """The owner's newest ready photo with these bytes in the same album (or outside
        any), if any (upload dedupe)."""
        query = (
            sa.select(photos)
            .where(
                photos.c.owner_id == owner_id,
                photos.c.sha256 == sha256,
                photos.c.status == PhotoStatus.READY.value,
                photos.c.album_id.is_not_distinct_from(album_id),
            )
            .order_by(photos.c.created_at.desc())
            .limit(1)
        )
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None


def _into(to: PhotoStatus) -> list[PhotoStatus]:
    """Every status TRANSITIONS lets a photo leave for `to`."""
    return [status for status, allowed in TRANSITIONS.items() if to in allowed]


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """Photo records alone, for tools and tests; services open everything together
    (`shared.resources`)."""
    async with open_database(settings) as db:
        yield Store(db)
