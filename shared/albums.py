"""Album records: albums, their members, and the reveal.

An album is sealed while its `reveal_at` is in the future, by the clock alone, so a photo
develops the moment its album's time comes. Announcing it is separate: `claim_reveals`
moves `revealed_at` from NULL by compare-and-set and queues album.revealed in the same
transaction, so however many loops race, each album is announced once.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import Database
from shared.events import AlbumDeleted, AlbumRevealed, Envelope, album_event_id, new_trace_id
from shared.outbox import queued
from shared.records import PhotoRecord, PhotoStatus, UtcDatetime
from shared.tables import album_members, albums, photos, share_links


class Role(StrEnum):
    OWNER = "owner"
    CONTRIBUTOR = "contributor"
    VIEWER = "viewer"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AlbumRecord(_Record):
    id: str
    owner_id: str
    title: str
    reveal_at: UtcDatetime | None
    revealed_at: UtcDatetime | None
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def sealed(self, now: datetime | None = None) -> bool:
        return self.reveal_at is not None and self.reveal_at > (now or datetime.now(UTC))


class MemberRecord(_Record):
    album_id: str
    user_id: str
    role: Role
    added_at: UtcDatetime


def _album(row: sa.Row[Any]) -> AlbumRecord:
    return AlbumRecord.model_validate(dict(row._mapping))


def _ready_in(album_ids: Collection[str]) -> sa.Select[Any]:
    c = photos.c
    return (
        sa.select(c.album_id, sa.func.count())
        .where(c.album_id.in_(list(album_ids)), c.status == PhotoStatus.READY.value)
        .group_by(c.album_id)
    )


class Albums:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, album: AlbumRecord) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(sa.insert(albums).values(**album.model_dump()))

    async def get(self, album_id: str) -> AlbumRecord | None:
        async with self.db.transaction() as conn:
            row = (await conn.execute(sa.select(albums).where(albums.c.id == album_id))).first()
        return _album(row) if row else None

    async def role_of(self, album_id: str, user_id: str) -> tuple[AlbumRecord, Role | None] | None:
        """The album and the user's role in it (None: not in it), in one query."""
        m = album_members.c
        query = (
            sa.select(albums, m.role.label("member_role"))
            .outerjoin(album_members, sa.and_(m.album_id == albums.c.id, m.user_id == user_id))
            .where(albums.c.id == album_id)
        )
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        album = _album(row)
        if album.owner_id == user_id:
            return album, Role.OWNER
        return album, Role(row.member_role) if row.member_role else None

    async def of_user(
        self, user_id: str, *, limit: int, before: tuple[datetime, str] | None = None
    ) -> list[tuple[AlbumRecord, Role]]:
        """Albums the user owns or joined, newest first, keyset-paged on (created_at, id)."""
        a, m = albums.c, album_members.c
        query = (
            sa.select(albums, m.role.label("member_role"))
            .outerjoin(album_members, sa.and_(m.album_id == a.id, m.user_id == user_id))
            .where(sa.or_(a.owner_id == user_id, m.user_id.is_not(None)))
        )
        if before is not None:
            created, album_id = before
            query = query.where(
                sa.or_(a.created_at < created, sa.and_(a.created_at == created, a.id < album_id))
            )
        query = query.order_by(a.created_at.desc(), a.id.desc()).limit(limit)
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (_album(r), Role.OWNER if r.owner_id == user_id else Role(r.member_role)) for r in rows
        ]

    async def photo_counts(self, album_ids: Collection[str]) -> dict[str, int]:
        """Ready photos in each album, in one query."""
        counts = dict.fromkeys(album_ids, 0)
        if counts:
            async with self.db.transaction() as conn:
                for album_id, count in (await conn.execute(_ready_in(counts))).all():
                    counts[album_id] = int(count)
        return counts

    async def reveal_times(self, album_ids: Collection[str]) -> dict[str, datetime | None]:
        """Each album's reveal time, in one query; albums that are gone are left out."""
        if not album_ids:
            return {}
        query = sa.select(albums.c.id, albums.c.reveal_at).where(albums.c.id.in_(list(album_ids)))
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return {r.id: _utc(r.reveal_at) if r.reveal_at else None for r in rows}

    async def update(
        self, album_id: str, *, title: str | None, reveal_at: datetime | None, set_reveal: bool
    ) -> tuple[AlbumRecord, list[Envelope]] | None:
        """Change the title or the reveal time; a reveal time now or past develops the
        album at once and queues album.revealed, returned for the caller to publish.
        None if the album is gone."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"updated_at": now}
        if title is not None:
            values["title"] = title
        if set_reveal:
            values["reveal_at"] = reveal_at
        async with self.db.transaction() as conn:
            stmt = sa.update(albums).where(albums.c.id == album_id).values(**values)
            if not (await conn.execute(stmt)).rowcount:
                return None
            claimed = await self._claim(conn, [album_id], now)
            row = (await conn.execute(sa.select(albums).where(albums.c.id == album_id))).one()
        return _album(row), claimed

    async def delete(self, album_id: str, owner_id: str, trace_id: str) -> Envelope | None:
        """The album, its members and links go (its photos stay with their uploaders).
        Its album.deleted, queued with it, for the caller to publish; None if gone."""
        async with self.db.transaction() as conn:
            gone = await self._delete(conn, [album_id], owner_id, trace_id)
        return gone[0] if gone else None

    async def _delete(
        self, conn: AsyncConnection, album_ids: list[str], owner_id: str, trace_id: str
    ) -> list[Envelope]:
        """Queue an album.deleted for each album deleted, naming its members (gone too)."""
        m = album_members.c
        members: dict[str, list[str]] = {album_id: [] for album_id in album_ids}
        listed = sa.select(m.album_id, m.user_id).where(m.album_id.in_(album_ids))
        for row in (await conn.execute(listed.order_by(m.added_at, m.user_id))).all():
            members[row.album_id].append(row.user_id)
        await conn.execute(sa.delete(share_links).where(share_links.c.album_id.in_(album_ids)))
        await conn.execute(sa.delete(album_members).where(m.album_id.in_(album_ids)))
        await conn.execute(
            sa.update(photos).where(photos.c.album_id.in_(album_ids)).values(album_id=None)
        )
        stmt = sa.delete(albums).where(albums.c.id.in_(album_ids)).returning(albums.c.id)
        gone = [row.id for row in (await conn.execute(stmt)).all()]
        envelopes = [
            Envelope.wrap(
                AlbumDeleted(album_id=album_id, owner_id=owner_id, member_ids=members[album_id]),
                trace_id=trace_id,
            )
            for album_id in gone
        ]
        for envelope in envelopes:
            await conn.execute(queued(envelope))
        return envelopes

    async def forget_user(self, user_id: str, trace_id: str) -> list[Envelope]:
        """Account deletion: the user's albums, their memberships and the links they made
        to their photos. Returns an album.deleted for each album, queued with it."""
        async with self.db.transaction() as conn:
            owned = sa.select(albums.c.id).where(albums.c.owner_id == user_id)
            album_ids = [row.id for row in (await conn.execute(owned)).all()]
            gone = await self._delete(conn, album_ids, user_id, trace_id) if album_ids else []
            await conn.execute(sa.delete(album_members).where(album_members.c.user_id == user_id))
            await conn.execute(
                sa.delete(share_links).where(
                    share_links.c.created_by == user_id, share_links.c.photo_id.is_not(None)
                )
            )
        return gone

    # --- members ---

    async def members(self, album_id: str) -> list[MemberRecord]:
        m = album_members.c
        query = (
            sa.select(album_members).where(m.album_id == album_id).order_by(m.added_at, m.user_id)
        )
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [MemberRecord.model_validate(dict(r._mapping)) for r in rows]

    async def put_member(
        self, album_id: str, user_id: str, role: Role, envelope: Envelope
    ) -> tuple[MemberRecord, bool]:
        """Add the member (queueing `envelope`; True) or change their role (False)."""
        m = album_members.c
        which = sa.and_(m.album_id == album_id, m.user_id == user_id)
        async with self.db.transaction() as conn:
            changed = await conn.execute(
                sa.update(album_members).where(which).values(role=role.value)
            )
            added = False
            if changed.rowcount and role is Role.VIEWER:
                await conn.execute(_detach_pending(album_id, user_id))
            if not changed.rowcount:
                insert = self.db.insert(album_members).values(
                    album_id=album_id, user_id=user_id, role=role.value, added_at=datetime.now(UTC)
                )
                added = bool((await conn.execute(insert.on_conflict_do_nothing())).rowcount)
                if added:
                    await conn.execute(queued(envelope))
            row = (await conn.execute(sa.select(album_members).where(which))).one()
        return MemberRecord.model_validate(dict(row._mapping)), added

    async def remove_member(self, album_id: str, user_id: str) -> bool:
        m = album_members.c
        stmt = sa.delete(album_members).where(m.album_id == album_id, m.user_id == user_id)
        async with self.db.transaction() as conn:
            await conn.execute(_detach_pending(album_id, user_id))
            return bool((await conn.execute(stmt)).rowcount)

    # --- photos ---

    async def photos(
        self, album_id: str, *, limit: int, before: tuple[datetime, str] | None = None
    ) -> list[PhotoRecord]:
        """The album's ready photos, newest first, keyset-paged on (created_at, id)."""
        c = photos.c
        query = sa.select(photos).where(c.album_id == album_id, c.status == PhotoStatus.READY.value)
        if before is not None:
            created, photo_id = before
            query = query.where(
                sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < photo_id))
            )
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [PhotoRecord.model_validate(dict(r._mapping)) for r in rows]

    async def remove_photo(self, album_id: str, photo_id: str) -> bool:
        c = photos.c
        stmt = (
            sa.update(photos)
            .where(c.id == photo_id, c.album_id == album_id, c.status != PhotoStatus.DELETED.value)
            .values(album_id=None)
        )
        async with self.db.transaction() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    # --- the reveal ---

    async def claim_reveals(self, *, limit: int = 100) -> list[Envelope]:
        """Announce albums whose time came: each is claimed by compare-and-set with its
        album.revealed queued in the same transaction. Returns the events queued, for the
        caller to publish (the outbox relay sends any it does not)."""
        now = datetime.now(UTC)
        a = albums.c
        due = (
            sa.select(a.id)
            .where(a.revealed_at.is_(None), a.reveal_at <= now)
            # One total order for every replica: their claims lock rows in the same order,
            # so two loops claiming together never deadlock on albums due at one instant.
            .order_by(a.reveal_at, a.id)
            .limit(limit)
        )
        async with self.db.transaction() as conn:
            ids = [row.id for row in (await conn.execute(due)).all()]
            return await self._claim(conn, ids, now)

    async def _claim(
        self, conn: AsyncConnection, album_ids: list[str], now: datetime
    ) -> list[Envelope]:
        a = albums.c
        counts = {album_id: 0 for album_id in album_ids}
        claimed: list[Envelope] = []
        for album_id in album_ids:
            stmt = (
                sa.update(albums)
                .where(a.id == album_id, a.revealed_at.is_(None), a.reveal_at <= now)
                .values(revealed_at=now)
                .returning(a.owner_id, a.title, a.reveal_at)
            )
            row = (await conn.execute(stmt)).first()
            if row is None:
                continue  # not due, or another loop announced it
            for found, count in (await conn.execute(_ready_in([album_id]))).all():
                counts[found] = int(count)
            event = AlbumRevealed(
                album_id=album_id,
                owner_id=row.owner_id,
                title=row.title,
                reveal_at=_utc(row.reveal_at),
                photo_count=counts[album_id],
            )
            envelope = Envelope.wrap(
                event,
                trace_id=new_trace_id(),
                event_id=album_event_id(AlbumRevealed.TYPE, album_id),
            )
            await conn.execute(queued(envelope))
            claimed.append(envelope)
        return claimed


def _detach_pending(album_id: str, user_id: str) -> Any:
    """A member who may no longer add photos cannot finish uploads granted before: their
    photos not yet uploaded leave the album (they stay the uploader's)."""
    c = photos.c
    return (
        sa.update(photos)
        .where(
            c.album_id == album_id,
            c.owner_id == user_id,
            c.status == PhotoStatus.PENDING.value,
        )
        .values(album_id=None)
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
