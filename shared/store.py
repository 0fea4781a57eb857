"""The metadata store: photos and their renditions, on PostgreSQL or SQLite.

State only moves forward. Every transition is a conditional UPDATE that names the states
it may leave, so a duplicate or late message can never move a photo backwards:

    pending -> verified -> ready
    pending | verified -> rejected
    (deleted: issue-3 seam, reachable from any state)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.errors import DatabaseUnavailable, PermanentError
from shared.migrations import migrate
from shared.settings import Settings
from shared.tables import photos, renditions


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
    reason: str | None
    reason_detail: str | None
    upload_expires_at: datetime
    created_at: datetime
    updated_at: datetime


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


def _record(row: sa.Row[Any]) -> PhotoRecord:
    m = row._mapping
    return PhotoRecord(
        **{
            k: m[k]
            for k in (
                "id",
                "owner_id",
                "object_key",
                "filename",
                "trace_id",
                "declared_type",
                "declared_size",
                "content_type",
                "size",
                "width",
                "height",
                "reason",
                "reason_detail",
            )
        },
        status=PhotoStatus(m["status"]),
        upload_expires_at=_aware(m["upload_expires_at"]),
        created_at=_aware(m["created_at"]),
        updated_at=_aware(m["updated_at"]),
    )


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

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise DatabaseUnavailable(f"metadata store failed: {exc}") from exc

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
        now = datetime.now(UTC)
        stmt = (
            self._insert(photos)
            .values(
                id=photo.id,
                owner_id=photo.owner_id,
                status=PhotoStatus.PENDING.value,
                object_key=photo.object_key,
                filename=photo.filename,
                trace_id=photo.trace_id,
                declared_type=photo.declared_type,
                declared_size=photo.declared_size,
                upload_expires_at=photo.upload_expires_at,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        async with self._tx() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def get(self, photo_id: str) -> PhotoRecord | None:
        async with self._tx() as conn:
            row = (await conn.execute(sa.select(photos).where(photos.c.id == photo_id))).first()
        return _record(row) if row else None

    async def renditions(self, photo_id: str) -> list[RenditionRecord]:
        query = sa.select(renditions).where(renditions.c.photo_id == photo_id)
        async with self._tx() as conn:
            rows = (await conn.execute(query.order_by(renditions.c.name))).all()
        return [
            RenditionRecord(r.name, r.object_key, r.width, r.height, r.content_type, r.size)
            for r in rows
        ]

    async def _advance(
        self,
        conn: AsyncConnection,
        photo_id: str,
        to: PhotoStatus,
        allowed_from: Sequence[PhotoStatus],
        **values: Any,
    ) -> bool:
        stmt = (
            sa.update(photos)
            .where(photos.c.id == photo_id, photos.c.status.in_([s.value for s in allowed_from]))
            .values(status=to.value, updated_at=datetime.now(UTC), **values)
        )
        return bool((await conn.execute(stmt)).rowcount)

    async def mark_verified(
        self,
        photo_id: str,
        *,
        content_type: str,
        size: int,
        width: int,
        height: int,
        etag: str | None,
    ) -> bool:
        async with self._tx() as conn:
            return await self._advance(
                conn,
                photo_id,
                PhotoStatus.VERIFIED,
                [PhotoStatus.PENDING],
                content_type=content_type,
                size=size,
                width=width,
                height=height,
                etag=etag,
            )

    async def mark_rejected(self, photo_id: str, *, reason: str, detail: str) -> bool:
        async with self._tx() as conn:
            return await self._advance(
                conn,
                photo_id,
                PhotoStatus.REJECTED,
                [PhotoStatus.PENDING, PhotoStatus.VERIFIED],
                reason=reason,
                reason_detail=detail[:2000],
            )

    async def mark_ready(
        self, photo_id: str, *, width: int, height: int, made: Sequence[RenditionRecord]
    ) -> bool:
        """Record renditions and move to ready in one transaction."""
        async with self._tx() as conn:
            for r in made:
                stmt = self._insert(renditions).values(
                    photo_id=photo_id,
                    name=r.name,
                    object_key=r.object_key,
                    width=r.width,
                    height=r.height,
                    content_type=r.content_type,
                    size=r.size,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["photo_id", "name"],
                        set_={
                            c: stmt.excluded[c]
                            for c in ("object_key", "width", "height", "content_type", "size")
                        },
                    )
                )
            return await self._advance(
                conn,
                photo_id,
                PhotoStatus.READY,
                [PhotoStatus.VERIFIED],
                width=width,
                height=height,
            )

    async def close(self) -> None:
        await self._engine.dispose()


def create_engine(url: str) -> AsyncEngine:
    url = engine_url(url)
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@asynccontextmanager
async def open_store(settings: Settings, *, run_migrations: bool = True) -> AsyncIterator[Store]:
    url = settings.effective_database_url
    if url.startswith("sqlite") and not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
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
