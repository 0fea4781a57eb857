"""The metadata store: photos and their renditions, on PostgreSQL or SQLite.

State only moves forward. Every transition is a conditional UPDATE that names the states
it may leave, so a duplicate or late message can never move a photo backwards:

    pending -> verified -> ready
    pending | verified -> rejected
    (deleted: issue-3 seam, reachable from any state)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.errors import DatabaseUnavailable, PermanentError
from shared.events import Envelope
from shared.migrations import migrate
from shared.settings import Settings
from shared.tables import outbox, photos, renditions


class PhotoStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    READY = "ready"
    REJECTED = "rejected"
    DELETED = "deleted"


@dataclass(frozen=True)
class NewPhoto:
    id: str
    owner_id: str
    object_key: str
    filename: str
    declared_type: str
    declared_size: int
    upload_expires_at: datetime
    trace_id: str
    keep_location: bool = False  # the owner's opt-in to recording GPS


@dataclass(frozen=True)
class PhotoFacts:
    """What rendering learnt about a photo. `taken_at` is the instant (a camera time with no
    recorded offset is read as UTC); `taken_at_local` keeps the camera's own wall clock."""

    sha256: str
    placeholder: str
    taken_at: datetime | None = None
    taken_at_local: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens_model: str | None = None
    exposure_time: float | None = None
    f_number: float | None = None
    iso: int | None = None
    focal_length: float | None = None
    gps_latitude: float | None = None
    gps_longitude: float | None = None


@dataclass(frozen=True)
class RenditionRecord:
    name: str
    object_key: str
    width: int
    height: int
    content_type: str
    size: int


@dataclass(frozen=True)
class PhotoRecord:
    id: str
    owner_id: str
    status: PhotoStatus
    object_key: str
    filename: str
    trace_id: str
    declared_type: str
    declared_size: int
    content_type: str | None
    size: int | None
    width: int | None
    height: int | None
    etag: str | None
    reason: str | None
    reason_detail: str | None
    upload_expires_at: datetime
    created_at: datetime
    updated_at: datetime
    keep_location: bool = False
    facts: PhotoFacts | None = None  # once rendered


@dataclass(frozen=True)
class ImageFacts:
    content_type: str
    size: int
    width: int
    height: int


def facts_of(photo: PhotoRecord) -> ImageFacts:
    """What verification established about a photo; only verified photos have them."""
    ct, size, width, height = photo.content_type, photo.size, photo.width, photo.height
    if ct is None or size is None or width is None or height is None:
        raise PermanentError(f"photo {photo.id} is {photo.status} but has no verified facts")
    return ImageFacts(ct, size, width, height)


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_CONVERTED = {"status", "upload_expires_at", "created_at", "updated_at", "facts"}


def _record(row: sa.Row[Any]) -> PhotoRecord:
    m = row._mapping
    return PhotoRecord(
        **{f.name: m[f.name] for f in fields(PhotoRecord) if f.name not in _CONVERTED},
        status=PhotoStatus(m["status"]),
        upload_expires_at=_aware(m["upload_expires_at"]),
        created_at=_aware(m["created_at"]),
        updated_at=_aware(m["updated_at"]),
        facts=_facts(m),
    )


def _facts(m: Any) -> PhotoFacts | None:
    if m["sha256"] is None:  # recorded with the rest of the facts, when rendered
        return None
    values = {f.name: m[f.name] for f in fields(PhotoFacts)}
    return PhotoFacts(**(values | {"taken_at": m["taken_at"] and _aware(m["taken_at"])}))


def engine_url(url: str) -> str:
    """Accept plain `postgresql://` / `sqlite:///` URLs and pick the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # SQLite has no advisory locks; it only ever serves one process.
        self._owner_lock = asyncio.Lock()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (IntegrityError, DataError) as exc:
            # A constraint or the data itself said no: the same statement never succeeds.
            raise PermanentError(f"metadata store refused the change: {exc.orig}") from exc
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"metadata store failed: {exc!r}") from exc

    async def ping(self) -> bool:
        try:
            async with self._tx() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except DatabaseUnavailable:
            return False
        return True

    def _insert(self, table: sa.Table) -> Any:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    async def create_pending(self, photo: NewPhoto) -> bool:
        """Record an upload intent; False if the photo was already recorded."""
        async with self._tx() as conn:
            result = await conn.execute(self._pending_insert(photo))
        return bool(result.rowcount)

    def _pending_insert(self, photo: NewPhoto) -> Any:
        now = datetime.now(UTC)
        return (
            self._insert(photos)
            .values(
                id=photo.id,
                owner_id=photo.owner_id,
                status=PhotoStatus.PENDING.value,
                object_key=photo.object_key,
                filename=photo.filename,
                trace_id=photo.trace_id,
                keep_location=photo.keep_location,
                declared_type=photo.declared_type,
                declared_size=photo.declared_size,
                upload_expires_at=photo.upload_expires_at,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )

    async def get(self, photo_id: str) -> PhotoRecord | None:
        async with self._tx() as conn:
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
        async with self._tx() as conn:
            return [_record(row) for row in (await conn.execute(query)).all()]

    async def forget_owner(self, owner_id: str) -> int:
        """Delete every record of an owner (account deletion); returns photos removed."""
        owned = sa.select(photos.c.id).where(photos.c.owner_id == owner_id)
        async with self._tx() as conn:
            await conn.execute(sa.delete(renditions).where(renditions.c.photo_id.in_(owned)))
            result = await conn.execute(sa.delete(photos).where(photos.c.owner_id == owner_id))
        return int(result.rowcount)

    async def renditions(self, photo_id: str) -> list[RenditionRecord]:
        query = sa.select(renditions).where(renditions.c.photo_id == photo_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query.order_by(renditions.c.name))).all()
        return [
            RenditionRecord(r.name, r.object_key, r.width, r.height, r.content_type, r.size)
            for r in rows
        ]

    async def renditions_for(self, photo_ids: Sequence[str]) -> dict[str, list[RenditionRecord]]:
        """The renditions of several photos in one query, by photo id (absent: none)."""
        query = sa.select(renditions).where(renditions.c.photo_id.in_(photo_ids))
        found: dict[str, list[RenditionRecord]] = {}
        async with self._tx() as conn:
            rows = (await conn.execute(query.order_by(renditions.c.name))).all()
        for r in rows:
            found.setdefault(r.photo_id, []).append(
                RenditionRecord(r.name, r.object_key, r.width, r.height, r.content_type, r.size)
            )
        return found

    async def _advance(
        self,
        conn: AsyncConnection,
        photo_id: str,
        to: PhotoStatus,
        allowed_from: Sequence[PhotoStatus],
        announce: Envelope,
        **values: Any,
    ) -> bool:
        """Move the photo on and queue `announce` in the outbox, both or neither."""
        stmt = (
            sa.update(photos)
            .where(photos.c.id == photo_id, photos.c.status.in_([s.value for s in allowed_from]))
            .values(status=to.value, updated_at=datetime.now(UTC), **values)
        )
        if not (await conn.execute(stmt)).rowcount:
            return False
        await conn.execute(
            sa.insert(outbox).values(
                id=announce.id,
                routing_key=announce.type,
                body=announce.to_bytes().decode(),
                created_at=datetime.now(UTC),
            )
        )
        return True

    async def mark_verified(
        self, photo_id: str, *, facts: ImageFacts, etag: str | None, announce: Envelope
    ) -> bool:
        async with self._tx() as conn:
            return await self._advance(
                conn,
                photo_id,
                PhotoStatus.VERIFIED,
                [PhotoStatus.PENDING],
                announce,
                content_type=facts.content_type,
                size=facts.size,
                width=facts.width,
                height=facts.height,
                etag=etag,
            )

    async def mark_rejected(
        self,
        photo_id: str,
        *,
        reason: str,
        detail: str,
        announce: Envelope,
        allowed_from: Sequence[PhotoStatus] = (PhotoStatus.PENDING,),
    ) -> bool:
        async with self._tx() as conn:
            return await self._advance(
                conn,
                photo_id,
                PhotoStatus.REJECTED,
                allowed_from,
                announce,
                reason=reason,
                reason_detail=detail[:2000],
            )

    async def mark_ready(
        self,
        photo_id: str,
        *,
        width: int,
        height: int,
        made: Sequence[RenditionRecord],
        announce: Envelope,
        facts: PhotoFacts | None = None,
    ) -> bool:
        """Move to ready and record its renditions and facts in one transaction."""
        async with self._tx() as conn:
            advanced = await self._advance(
                conn,
                photo_id,
                PhotoStatus.READY,
                [PhotoStatus.VERIFIED],
                announce,
                width=width,
                height=height,
                **(asdict(facts) if facts else {}),
            )
            if advanced and made:
                await conn.execute(
                    sa.insert(renditions),
                    [{"photo_id": photo_id, **asdict(r)} for r in made],
                )
            return advanced

    async def claim_unsent(
        self, *, older_than_s: float, lease_s: float, limit: int = 100
    ) -> list[Envelope]:
        """Outbox events nobody sent yet, leased to this caller so other relays skip them."""
        now = datetime.now(UTC)
        due = (
            sa.select(outbox.c.id)
            .where(
                outbox.c.created_at < now - timedelta(seconds=older_than_s),
                sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.created_at)
            .limit(limit)
        )
        stmt = (
            sa.update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(claimed_until=now + timedelta(seconds=lease_s))
            .returning(outbox.c.body)
        )
        async with self._tx() as conn:
            rows = (await conn.execute(stmt)).all()
        return [Envelope.from_bytes(row.body.encode()) for row in rows]

    async def forget_sent(self, *event_ids: str) -> None:
        async with self._tx() as conn:
            await conn.execute(sa.delete(outbox).where(outbox.c.id.in_(event_ids)))

    async def close(self) -> None:
        await self._engine.dispose()

    # --- gateway queries ---
    # Tables this section adds are imported inside its methods, leaving the module's
    # header to the rest of the file.

    async def owner_photos(
        self,
        owner_id: str,
        *,
        limit: int,
        before: tuple[datetime, str] | None = None,
        statuses: Sequence[PhotoStatus] = (),
        taken_from: datetime | None = None,
        taken_to: datetime | None = None,
    ) -> list[PhotoRecord]:
        """An owner's photos, newest first, keyset-paged on (created_at, id): rows inserted
        meanwhile sort before the cursor, so later pages neither skip nor repeat."""
        c = photos.c
        query = sa.select(photos).where(
            c.owner_id == owner_id, c.status != PhotoStatus.DELETED.value
        )
        if statuses:
            query = query.where(c.status.in_([s.value for s in statuses]))
        if before is not None:
            created, photo_id = before
            query = query.where(
                sa.or_(c.created_at < created, sa.and_(c.created_at == created, c.id < photo_id))
            )
        if taken_from is not None:
            query = query.where(c.taken_at >= taken_from)
        if taken_to is not None:
            query = query.where(c.taken_at < taken_to)
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        async with self._tx() as conn:
            return [_record(row) for row in (await conn.execute(query)).all()]

    async def usage(self, owner_id: str) -> tuple[int, int, int]:
        """(photos kept, bytes kept, uploads pending) of an owner, for quotas. A pending
        upload counts until its URL lapses."""
        async with self._tx() as conn:
            return await self._usage(conn, owner_id)

    async def reserve(
        self,
        owner_id: str,
        intents: Sequence[NewPhoto],
        check: Callable[[tuple[int, int, int]], None],
        announce: Sequence[Envelope] = (),
    ) -> None:
        """Record intents, and queue their announcements in the outbox, only if
        `check(usage)` lets them through, atomically per owner: concurrent requests (on any
        replica) are serialised, so quotas cannot be overrun."""
        sqlite = self._engine.dialect.name == "sqlite"
        async with self._owner_lock if sqlite else contextlib.nullcontext(), self._tx() as conn:
            if not sqlite:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:owner))"), {"owner": owner_id}
                )
            check(await self._usage(conn, owner_id))
            for intent in intents:
                await conn.execute(self._pending_insert(intent))
            for envelope in announce:
                await conn.execute(self._queued(envelope))

    async def enqueue(self, announce: Envelope) -> None:
        """Queue an event in the outbox on its own (nothing else changes with it)."""
        async with self._tx() as conn:
            await conn.execute(self._queued(announce))

    async def _usage(self, conn: AsyncConnection, owner_id: str) -> tuple[int, int, int]:
        c = photos.c
        pending = sa.and_(
            c.status == PhotoStatus.PENDING.value, c.upload_expires_at > datetime.now(UTC)
        )
        kept = sa.or_(c.status.in_([PhotoStatus.VERIFIED.value, PhotoStatus.READY.value]), pending)
        query = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.func.coalesce(c.size, c.declared_size)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((pending, 1), else_=0)), 0),
        ).where(c.owner_id == owner_id, kept)
        row = (await conn.execute(query)).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def mark_deleted(self, photo_id: str, owner_id: str, announce: Envelope) -> bool:
        """Take one photo out of the API and queue its purge, both or neither."""
        stmt = (
            sa.update(photos)
            .where(
                photos.c.id == photo_id,
                photos.c.owner_id == owner_id,
                photos.c.status != PhotoStatus.DELETED.value,
            )
            .values(status=PhotoStatus.DELETED.value, updated_at=datetime.now(UTC))
        )
        async with self._tx() as conn:
            if not (await conn.execute(stmt)).rowcount:
                return False
            await conn.execute(self._queued(announce))
        return True

    async def mark_owner_deleted(self, owner_id: str, announce: Envelope) -> int:
        """Take every photo of an owner out of the API and queue the account purge."""
        stmt = (
            sa.update(photos)
            .where(photos.c.owner_id == owner_id, photos.c.status != PhotoStatus.DELETED.value)
            .values(status=PhotoStatus.DELETED.value, updated_at=datetime.now(UTC))
        )
        async with self._tx() as conn:
            result = await conn.execute(stmt)
            await conn.execute(self._queued(announce))
        return int(result.rowcount)

    async def ready_with_sha256(self, owner_id: str, sha256: str) -> PhotoRecord | None:
        """The owner's newest ready photo with these bytes, if any (upload dedupe)."""
        query = (
            sa.select(photos)
            .where(
                photos.c.owner_id == owner_id,
                photos.c.sha256 == sha256,
                photos.c.status == PhotoStatus.READY.value,
            )
            .order_by(photos.c.created_at.desc())
            .limit(1)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row else None

    async def add_api_key(self, key_id: str, name: str, secret_hash: str, scopes: str) -> None:
        from shared.tables import api_keys

        values = {"id": key_id, "name": name, "secret_hash": secret_hash, "scopes": scopes}
        async with self._tx() as conn:
            await conn.execute(sa.insert(api_keys).values(**values, created_at=datetime.now(UTC)))

    async def api_key_by_hash(self, secret_hash: str) -> dict[str, Any] | None:
        """The key whose secret hashes to this, revoked or not."""
        from shared.tables import api_keys

        query = sa.select(api_keys).where(api_keys.c.secret_hash == secret_hash)
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        return dict(row._mapping) if row else None

    async def api_key_list(self) -> list[dict[str, Any]]:
        from shared.tables import api_keys

        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        async with self._tx() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]

    async def revoke_api_key(self, key_id: str) -> bool:
        from shared.tables import api_keys

        stmt = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        async with self._tx() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    @staticmethod
    def _queued(announce: Envelope) -> Any:
        return sa.insert(outbox).values(
            id=announce.id,
            routing_key=announce.type,
            body=announce.to_bytes().decode(),
            created_at=datetime.now(UTC),
        )


def create_engine(url: str, *, timeout: float = 30.0) -> AsyncEngine:
    """An engine whose connects, statements and pool waits all give up after `timeout`."""
    url = engine_url(url)
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": timeout})
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


@asynccontextmanager
async def open_store(settings: Settings, *, run_migrations: bool = True) -> AsyncIterator[Store]:
    url = settings.effective_database_url
    if url.startswith("sqlite") and not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, timeout=settings.database_timeout)
    store = Store(engine)
    try:
        if run_migrations:
            try:
                await migrate(engine)
            except (OperationalError, DBAPIError, OSError) as exc:
                raise DatabaseUnavailable(f"cannot migrate the metadata store: {exc}") from exc
        yield store
    finally:
        await store.close()
