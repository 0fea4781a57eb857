"""Share-link records: a link opens an album or one photo to whoever holds its token.

Only the token's SHA-256 is stored (a token is 256 random bits, so a fast hash is
enough), and a password only as its argon2 hash, made by the gateway.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.db import Database
from shared.records import UtcDatetime
from shared.tables import share_links


class LinkRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    token_hash: str
    album_id: str | None  # exactly one of album_id and photo_id
    photo_id: str | None
    created_by: str
    expires_at: UtcDatetime | None
    password_hash: str | None
    allow_download: bool
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Links:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, link: LinkRecord) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(sa.insert(share_links).values(**link.model_dump()))

    async def by_token(self, token: str) -> LinkRecord | None:
        """The live (unrevoked) link with this token; expired ones too, so they can be
        told apart."""
        c = share_links.c
        query = sa.select(share_links).where(
            c.token_hash == token_hash(token), c.revoked_at.is_(None)
        )
        async with self.db.transaction() as conn:
            row = (await conn.execute(query)).first()
        return LinkRecord.model_validate(dict(row._mapping)) if row else None

    async def of(
        self, *, album_id: str | None = None, photo_id: str | None = None
    ) -> list[LinkRecord]:
        """The live links to an album or to a photo, oldest first."""
        c = share_links.c
        target = c.album_id == album_id if album_id is not None else c.photo_id == photo_id
        query = (
            sa.select(share_links)
            .where(target, c.revoked_at.is_(None))
            .order_by(c.created_at, c.id)
        )
        async with self.db.transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [LinkRecord.model_validate(dict(r._mapping)) for r in rows]

    async def revoke(
        self, link_id: str, *, album_id: str | None = None, photo_id: str | None = None
    ) -> bool:
        c = share_links.c
        target = c.album_id == album_id if album_id is not None else c.photo_id == photo_id
        stmt = (
            sa.update(share_links)
            .where(c.id == link_id, target, c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        async with self.db.transaction() as conn:
            return bool((await conn.execute(stmt)).rowcount)
